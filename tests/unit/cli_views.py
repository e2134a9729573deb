"""Made-up views of `prefetcher status`, as reports.status builds them, for the rendering tests."""

from __future__ import annotations

from typing import Any


def node(instance: str, state: str, reason: str = "", seconds: float | None = None) -> dict[str, Any]:
    return {
        "cluster": "ml-prod",
        "instance_id": instance,
        "state": state,
        "finished_at": None if state == "requested" else "2026-12-02T10:00:00Z",
        "seconds": seconds,
        "bytes": 1_287_651_328 if state == "cached" else None,
        "reason": reason,
    }


def status_view(*nodes: dict[str, Any]) -> dict[str, Any]:
    return {
        "image": "ml/trainer@sha256:4d2b",
        "tags": ["v1.4.0"],
        "tag": "v1.4.0",
        "pushed_at": "2026-12-02T09:59:00Z",
        "superseded_by": None,
        "summary": {},
        "time_to_cached_seconds": {"p50": 12.5, "p95": 12.5},
        "nodes": list(nodes),
    }
