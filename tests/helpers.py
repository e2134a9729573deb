"""Helpers shared by the test suites."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
EVENTS = ROOT / "events"


def load_event(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((EVENTS / name).read_text())
    return loaded


class CallCounter:
    """Counts the AWS calls made through prefetcher.clients, with their API parameters."""

    def __init__(self) -> None:
        from collections import Counter

        self.calls: Counter[str] = Counter()
        self.params: dict[str, list[dict[str, Any]]] = {}
        self._remove: Any = None
        self._lock = threading.Lock()

    def __enter__(self) -> CallCounter:
        from prefetcher import clients

        clients.reset()
        self._remove = clients.on_create(self._attach)
        return self

    def __exit__(self, *exc: object) -> None:
        self._remove()

    def _attach(self, _service: str, client: Any) -> None:
        client.meta.events.register("before-parameter-build", self._count)

    def _count(self, params: dict[str, Any], event_name: str, **_kwargs: Any) -> None:
        operation = ".".join(event_name.split(".")[1:])  # e.g. ssm.SendCommand
        with self._lock:  # the audit path calls from threads
            self.calls[operation] += 1
            self.params.setdefault(operation, []).append(params)

    def count(self, operation: str) -> int:
        return self.calls[operation]


def moto_commands(account: str = "123456789012", region: str = "us-east-1") -> list[Any]:
    from moto.ssm.models import ssm_backends

    return list(ssm_backends[account][region]._commands)


def result_lines(images_parameter: str, outcome: str = "pulled") -> str:
    """The node agent's result lines (agent/prefetch.sh's contract) for every image of a
    command's `Images` parameter."""
    from prefetcher.refs import parse_images_parameter

    lines = [
        json.dumps({"image": image.pinned, "digest": image.digest, "tag": image.tag, "outcome": outcome,
                    "bytes": 1000, "seconds": 1.5, "error": "" if outcome != "failed" else "refused"})
        for image in parse_images_parameter(images_parameter)
    ]  # fmt: skip
    return "".join(f"{line}\n" for line in lines)
