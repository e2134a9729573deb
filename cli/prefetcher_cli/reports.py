"""The answers the CLI gives, built from the audit table's queries (`AuditTable.queries`: every
one a Query, never a Scan; typed rows) into plain dicts that output.py shows as a table or as
JSON."""

from __future__ import annotations

import re
import statistics
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from prefetcher import refs
from prefetcher.errors import ImageNotFoundError, PrefetcherError
from prefetcher.states import NodeState
from prefetcher.store import AuditTable, NodeImageRow, NodeRow
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


def _time_to_cached(record: NodeImageRow) -> float | None:
    if not record.holds or not record.finished_at or not record.requested_at:
        return None
    return max(0.0, (parse_iso(record.finished_at) - parse_iso(record.requested_at)).total_seconds())


def _percentile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return round(values[0], 3)
    return round(statistics.quantiles(values, n=100, method="inclusive")[int(share * 100) - 1], 3)


def _node_row(record: NodeImageRow) -> dict[str, Any]:
    return {
        "instance_id": record.instance_id,
        "cluster": record.cluster or "",
        "state": record.state,
        "holds_image": bool(record.holds),
        "reason": record.reason or "",
        "requested_at": record.requested_at,
        "started_at": record.started_at,
        "finished_at": record.finished_at,
        "seconds": record.seconds,
        "bytes": record.bytes,
        "command_id": record.command_id,
        "verified_at": record.verified_at,
    }


def _image_row(record: NodeImageRow) -> dict[str, Any]:
    return {
        "image": f"{record.repository}@{record.digest}",
        "tag": record.tag or None,
        "state": record.state,
        "holds_image": bool(record.holds),
        "reason": record.reason or "",
        "finished_at": record.finished_at,
        "seconds": record.seconds,
        "bytes": record.bytes,
        "verified_at": record.verified_at,
        "last_seen_at": record.last_seen_at or (record.finished_at if record.holds else None),
    }


def _newest(values: list[str | None]) -> str | None:
    return max((v for v in values if v), default=None)


def status(table: AuditTable, image: str) -> dict[str, Any]:
    repository, tag, digest = parse_image(image)
    pushed_tag = None
    if not digest:
        pushed_tag = table.queries.current_tag(repository, tag)
        if pushed_tag is None:
            raise ImageNotFoundError(f"no push of {repository}:{tag} is recorded in table {table.table_name}")
        digest = pushed_tag.digest
    meta, nodes = table.queries.image(repository, digest)
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
        "registry": (meta.registry if meta else None) or (pushed_tag.registry if pushed_tag else None),
        "tags": sorted(meta.tags) if meta else [],
        "pushed_at": (pushed_tag.pushed_at if pushed_tag else None) or (meta.first_pushed_at if meta else None),
        "superseded_by": meta.superseded_by if meta else None,
        "summary": dict(sorted(Counter(r["state"] for r in rows).items(), key=lambda kv: STATE_ORDER.index(kv[0]))),
        "first_done_at": finished[0] if finished else None,
        "last_done_at": finished[-1] if finished else None,
        "time_to_cached_seconds": {"p50": _percentile(times, 0.50), "p95": _percentile(times, 0.95)},
        "nodes": rows,
    }


def node(table: AuditTable, instance_id: str) -> dict[str, Any]:
    if not re.fullmatch(r"(i|mi)-[0-9a-f]{8,17}", instance_id):
        raise UsageError(f"{instance_id!r} is not an EC2 instance id (i-0123456789abcdef0)")
    found, images = table.queries.node(instance_id)
    if found is None and not images:
        raise ImageNotFoundError(f"node {instance_id} is not recorded in table {table.table_name}")
    item = found or NodeRow(instance_id=instance_id)
    return {
        "instance_id": instance_id,
        "cluster": item.cluster or (images[0].cluster if images else None),
        "node_group": item.node_group,
        "state": item.node_state,
        "reason": item.reason,
        "first_seen_at": item.first_seen_at,
        "joined_at": item.joined_at,
        "left_at": item.left_at,
        "warm_at": item.warm_at,
        "warm_seconds": item.warm_seconds,
        "images": sorted((_image_row(i) for i in images), key=lambda row: row["image"]),
    }


def _node_list_row(node: NodeRow) -> dict[str, Any]:
    return {
        "instance_id": node.instance_id,
        "node_group": node.node_group,
        "state": node.node_state or "seen",
        "joined_at": node.joined_at or node.first_seen_at,
        "warm_at": node.warm_at,
        "warm_seconds": node.warm_seconds,
    }


def coverage(table: AuditTable, cluster: str | None = None) -> dict[str, Any]:
    clusters = [cluster] if cluster else table.queries.clusters()
    result = []
    for name in clusters:
        images, nodes = table.queries.cluster(name)
        # Live nodes: those that joined (and have not left), and those that got a command (a node
        # that leaves leaves both indexes).
        per_image = {(i.repository, i.digest): table.queries.coverage(name, i.repository, i.digest) for i in images}
        live = {n.instance_id for n in nodes} | {r.instance_id for rs in per_image.values() for r in rs}
        rows = []
        for image in sorted(images, key=lambda i: (i.repository, i.tag)):
            records = per_image[(image.repository, image.digest)]
            counts = Counter(r.state for r in records)
            holding = sum(1 for r in records if r.holds)
            verified = _newest([r.verified_at for r in records])
            rows.append(
                {
                    "image": f"{image.repository}:{image.tag}",
                    "digest": image.digest,
                    "pushed_at": image.pushed_at,
                    "nodes": len(live),
                    "holding": holding,
                    "percent": round(100 * holding / len(live), 1) if live else 0.0,
                    "states": dict(sorted(counts.items(), key=lambda kv: STATE_ORDER.index(kv[0]))),
                    "evicted": counts[str(NodeState.EVICTED)],
                    "given_up": counts[str(NodeState.GIVEN_UP)],
                    "last_verified_at": verified,
                }
            )
        warm_times = [n.warm_seconds for n in nodes if n.warm_seconds is not None]
        result.append(
            {
                "cluster": name,
                "nodes": len(live),
                "node_states": dict(
                    Counter(n.node_state or "seen" for n in nodes)
                    + Counter(seen=len(live - {n.instance_id for n in nodes}))
                ),
                "time_to_warm_seconds": {"p50": _percentile(warm_times, 0.5), "p95": _percentile(warm_times, 0.95)},
                "images": rows,
                # The newest inventory result recorded for a live node of the cluster.
                "last_verified_at": _newest([str(r["last_verified_at"] or "") for r in rows]),
                "node_list": sorted((_node_list_row(n) for n in nodes), key=lambda row: row["instance_id"]),
            }
        )
    if cluster and not result[0]["images"] and not result[0]["nodes"]:
        raise ImageNotFoundError(f"nothing is recorded for cluster {cluster} in table {table.table_name}")
    return {"clusters": result}


def failures(table: AuditTable, since: timedelta, cluster: str | None = None) -> dict[str, Any]:
    start = datetime.now(UTC) - since
    found = [r for r in table.queries.failures(start) if not cluster or r.cluster == cluster]
    rows = [
        {
            "finished_at": r.finished_at,
            "cluster": r.cluster,
            "instance_id": r.instance_id,
            "image": f"{r.repository}@{r.digest}",
            "tag": r.tag or None,
            "state": r.state,
            "reason": r.reason or "",
        }
        for r in found
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
