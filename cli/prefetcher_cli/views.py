"""The answers the CLI gives, built from audit-table queries (every one a Query, never a Scan)
into plain dicts that render as a table or as JSON."""

from __future__ import annotations

import re
import statistics
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from prefetcher import refs
from prefetcher.errors import ImageNotFoundError, PrefetcherError
from prefetcher.states import NodeState
from prefetcher.store import AuditTable
from prefetcher.timestamps import parse_iso

STATE_ORDER = [str(state) for state in NodeState]


class UsageError(PrefetcherError):
    """The user's argument cannot be understood."""


def parse_image(text: str) -> tuple[str, str, str]:
    """`[registry/]repository:tag` or `[registry/]repository@sha256:...` -> (repository, tag, digest)."""
    name, digest = ([*text.rsplit("@", 1), ""])[:2] if "@" in text else (text, "")
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        name = rest  # drop the registry host
    repository, _, tag = name.partition(":")
    if digest and not refs.is_digest(digest):
        raise UsageError(f"{text!r}: a digest must be sha256:<64 hex characters>")
    if not refs.is_repository(repository):
        raise UsageError(f"{text!r}: {repository!r} is not a repository name")
    if tag and not refs.is_tag(tag):
        raise UsageError(f"{text!r}: {tag!r} is not a tag")
    if not tag and not digest:
        raise UsageError(f"{text!r}: name the image as repository:tag or repository@sha256:<digest>")
    return repository, tag, digest


def parse_duration(text: str) -> timedelta:
    match = re.fullmatch(r"(\d+)([smhdw])", text.strip())
    if not match:
        raise UsageError(f"{text!r} is not a duration such as 30m, 24h or 7d")
    amount, unit = int(match.group(1)), match.group(2)
    return timedelta(**{{"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}[unit]: amount})


def _time_to_cached(node: dict[str, Any]) -> float | None:
    if not node.get("holds") or not node.get("finished_at") or not node.get("requested_at"):
        return None
    return max(0.0, (parse_iso(node["finished_at"]) - parse_iso(node["requested_at"])).total_seconds())


def _percentile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return round(values[0], 3)
    return round(statistics.quantiles(values, n=100, method="inclusive")[int(share * 100) - 1], 3)


def _node_row(item: dict[str, Any]) -> dict[str, Any]:
    return {
        "instance_id": item["instance_id"],
        "cluster": item.get("cluster", ""),
        "state": item["state"],
        "holds_image": bool(item.get("holds", False)),
        "reason": item.get("reason", ""),
        "requested_at": item.get("requested_at"),
        "started_at": item.get("started_at"),
        "finished_at": item.get("finished_at"),
        "seconds": float(item["seconds"]) if item.get("seconds") is not None else None,
        "bytes": int(item["bytes"]) if item.get("bytes") is not None else None,
        "command_id": item.get("command_id"),
    }


def status(table: AuditTable, image: str) -> dict[str, Any]:
    repository, tag, digest = parse_image(image)
    pushed_tag = None
    if not digest:
        current = table.current_tag(repository, tag)
        if current is None:
            raise ImageNotFoundError(f"no push of {repository}:{tag} is recorded in table {table.table_name}")
        digest = current["digest"]
        pushed_tag = current
    meta, nodes = table.image(repository, digest)
    if meta is None and not nodes:
        raise ImageNotFoundError(f"no image {repository}@{digest} is recorded in table {table.table_name}")
    rows = sorted((_node_row(n) for n in nodes), key=lambda r: (r["cluster"], r["instance_id"]))
    times = [t for t in (_time_to_cached(n) for n in nodes) if t is not None]
    finished = sorted(r["finished_at"] for r in rows if r["finished_at"])
    return {
        "image": f"{repository}@{digest}",
        "repository": repository,
        "tag": tag or None,
        "digest": digest,
        "registry": (meta or {}).get("registry") or (pushed_tag or {}).get("registry"),
        "tags": sorted((meta or {}).get("tags", [])),
        "pushed_at": (pushed_tag or meta or {}).get("pushed_at") or (meta or {}).get("first_pushed_at"),
        "superseded_by": (meta or {}).get("superseded_by"),
        "summary": dict(sorted(Counter(r["state"] for r in rows).items(), key=lambda kv: STATE_ORDER.index(kv[0]))),
        "first_done_at": finished[0] if finished else None,
        "last_done_at": finished[-1] if finished else None,
        "time_to_cached_seconds": {"p50": _percentile(times, 0.50), "p95": _percentile(times, 0.95)},
        "nodes": rows,
    }


def node(table: AuditTable, instance_id: str) -> dict[str, Any]:
    if not re.fullmatch(r"(i|mi)-[0-9a-f]{8,17}", instance_id):
        raise UsageError(f"{instance_id!r} is not an EC2 instance id (i-0123456789abcdef0)")
    item, images = table.node(instance_id)
    if item is None and not images:
        raise ImageNotFoundError(f"node {instance_id} is not recorded in table {table.table_name}")
    item = item or {}
    return {
        "instance_id": instance_id,
        "cluster": item.get("cluster") or (images[0].get("cluster") if images else None),
        "node_group": item.get("node_group"),
        "state": item.get("node_state"),
        "reason": item.get("reason"),
        "first_seen_at": item.get("first_seen_at"),
        "joined_at": item.get("joined_at"),
        "left_at": item.get("left_at"),
        "warm_at": item.get("warm_at"),
        "warm_seconds": float(item["warm_seconds"]) if item.get("warm_seconds") is not None else None,
        "images": sorted(
            (
                {
                    "image": f"{i['repository']}@{i['digest']}",
                    "tag": i.get("tag") or None,
                    "state": i["state"],
                    "holds_image": bool(i.get("holds", False)),
                    "reason": i.get("reason", ""),
                    "finished_at": i.get("finished_at"),
                    "seconds": float(i["seconds"]) if i.get("seconds") is not None else None,
                    "bytes": int(i["bytes"]) if i.get("bytes") is not None else None,
                }
                for i in images
            ),
            key=lambda row: row["image"],
        ),
    }


def coverage(table: AuditTable, cluster: str | None = None) -> dict[str, Any]:
    clusters = [cluster] if cluster else table.clusters()
    result = []
    for name in clusters:
        images, nodes = table.cluster(name)
        # Live nodes: those that joined (and have not left), and those that got a command (a node
        # that leaves leaves both indexes).
        per_image = {(i["repository"], i["digest"]): table.coverage(name, i["repository"], i["digest"]) for i in images}
        live = {n["instance_id"] for n in nodes} | {r["instance_id"] for rs in per_image.values() for r in rs}
        rows = []
        for image in sorted(images, key=lambda i: (i["repository"], i["tag"])):
            records = per_image[(image["repository"], image["digest"])]
            counts = Counter(r["state"] for r in records)
            holding = sum(1 for r in records if r.get("holds"))
            rows.append(
                {
                    "image": f"{image['repository']}:{image['tag']}",
                    "digest": image["digest"],
                    "pushed_at": image.get("pushed_at"),
                    "nodes": len(live),
                    "holding": holding,
                    "percent": round(100 * holding / len(live), 1) if live else 0.0,
                    "states": dict(sorted(counts.items(), key=lambda kv: STATE_ORDER.index(kv[0]))),
                }
            )
        warm_times = [float(n["warm_seconds"]) for n in nodes if n.get("warm_seconds") is not None]
        result.append(
            {
                "cluster": name,
                "nodes": len(live),
                "node_states": dict(
                    Counter(n.get("node_state", "seen") for n in nodes)
                    + Counter(seen=len(live - {n["instance_id"] for n in nodes}))
                ),
                "time_to_warm_seconds": {"p50": _percentile(warm_times, 0.5), "p95": _percentile(warm_times, 0.95)},
                "images": rows,
                "node_list": sorted(
                    (
                        {
                            "instance_id": n["instance_id"],
                            "node_group": n.get("node_group"),
                            "state": n.get("node_state", "seen"),
                            "joined_at": n.get("joined_at") or n.get("first_seen_at"),
                            "warm_at": n.get("warm_at"),
                            "warm_seconds": float(n["warm_seconds"]) if n.get("warm_seconds") is not None else None,
                        }
                        for n in nodes
                    ),
                    key=lambda row: row["instance_id"],
                ),
            }
        )
    if cluster and not result[0]["images"] and not result[0]["nodes"]:
        raise ImageNotFoundError(f"nothing is recorded for cluster {cluster} in table {table.table_name}")
    return {"clusters": result}


def failures(table: AuditTable, since: timedelta, cluster: str | None = None) -> dict[str, Any]:
    start = datetime.now(UTC) - since
    items = [i for i in table.failures(start) if not cluster or i.get("cluster") == cluster]
    rows = [
        {
            "finished_at": i.get("finished_at"),
            "cluster": i.get("cluster"),
            "instance_id": i["instance_id"],
            "image": f"{i['repository']}@{i['digest']}",
            "tag": i.get("tag") or None,
            "state": i["state"],
            "reason": i.get("reason", ""),
        }
        for i in items
    ]
    reasons = Counter((r["state"], r["reason"]) for r in rows)
    return {
        "since": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "count": len(rows),
        "by_reason": [
            {"state": state, "reason": reason, "count": count} for (state, reason), count in reasons.most_common()
        ],
        "failures": rows,
    }
