"""Tables for people, JSON for scripts."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any


def as_json(value: Any) -> str:
    return json.dumps(value, indent=2, default=str)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[("" if v is None else str(v)) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)


def _size(value: int | None) -> str:
    if value is None:
        return ""
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(value)


def _or_dash(value: object) -> str:
    return "-" if value is None else str(value)


def status(view: dict[str, Any]) -> str:
    ttc = view["time_to_cached_seconds"]
    head = [
        f"image      {view['image']}",
        f"tags       {', '.join(view['tags']) or '-'}" + (f"   (asked for {view['tag']})" if view["tag"] else ""),
        f"pushed     {view['pushed_at'] or '-'}"
        + (f"   superseded by {view['superseded_by']}" if view["superseded_by"] else ""),
        f"nodes      {', '.join(f'{k} {v}' for k, v in view['summary'].items()) or 'none yet'}",
        f"to cached  p50 {_or_dash(ttc['p50'])} s, p95 {_or_dash(ttc['p95'])} s",
        "",
    ]
    rows = [
        (
            n["cluster"],
            n["instance_id"],
            n["state"],
            n["finished_at"] or "",
            n["seconds"],
            _size(n["bytes"]),
            n["reason"],
        )
        for n in view["nodes"]
    ]
    return "\n".join(head) + table(["CLUSTER", "NODE", "STATE", "FINISHED", "SECONDS", "SIZE", "REASON"], rows)


def node(view: dict[str, Any]) -> str:
    lifecycle = [f"joined {view['joined_at']}" if view["joined_at"] else f"seen {view['first_seen_at'] or '-'}"]
    if view["warm_at"]:
        lifecycle.append(f"warm {view['warm_at']} ({view['warm_seconds']} s after running)")
    if view["left_at"]:
        lifecycle.append(f"left {view['left_at']}")
    head = [
        f"node       {view['instance_id']}",
        f"cluster    {view['cluster'] or '-'}" + (f"   node group {view['node_group']}" if view["node_group"] else ""),
        f"state      {view['state'] or '-'}   " + ", ".join(lifecycle),
        *([f"reason     {view['reason']}"] if view["reason"] else []),
        "",
    ]
    rows = [
        (i["image"], i["tag"] or "", i["state"], i["finished_at"] or "", i["verified_at"] or "-", i["seconds"],
         _size(i["bytes"]), i["reason"])
        for i in view["images"]
    ]  # fmt: skip
    headers = ["IMAGE", "TAG", "STATE", "FINISHED", "VERIFIED", "SECONDS", "SIZE", "REASON"]
    return "\n".join(head) + table(headers, rows)


def coverage(view: dict[str, Any]) -> str:
    rows = []
    summaries = []
    for cluster in view["clusters"]:
        warm = cluster["time_to_warm_seconds"]
        states = ", ".join(f"{k} {v}" for k, v in sorted(cluster["node_states"].items()))
        summary = f"{cluster['cluster']}: {cluster['nodes']} live node(s)" + (f" ({states})" if states else "")
        if warm["p50"] is not None:
            summary += f"; running to warm p50 {warm['p50']} s, p95 {warm['p95']} s"
        summary += f"; last verified {cluster['last_verified_at'] or 'never'}"
        summaries.append(summary)
        if not cluster["images"]:
            rows.append((cluster["cluster"], "(no current images)", "", cluster["nodes"], "", "", "", "", ""))
        for image in cluster["images"]:
            rows.append(
                (
                    cluster["cluster"],
                    image["image"],
                    image["digest"][:19],
                    image["nodes"],
                    image["holding"],
                    f"{image['percent']}%",
                    image["evicted"],
                    image["given_up"],
                    ", ".join(f"{k} {v}" for k, v in image["states"].items()),
                )
            )
    headers = ["CLUSTER", "IMAGE", "DIGEST", "NODES", "HOLDING", "COVERED", "EVICTED", "GIVEN-UP", "STATES"]
    return "\n".join(summaries) + "\n\n" + table(headers, rows)


def failures(view: dict[str, Any]) -> str:
    if not view["failures"]:
        return f"no failures since {view['since']}"
    grouped = table(["COUNT", "STATE", "REASON"], [(r["count"], r["state"], r["reason"]) for r in view["by_reason"]])
    rows = [
        (f["finished_at"], f["cluster"], f["instance_id"], f["image"], f["state"], f["reason"])
        for f in view["failures"]
    ]
    return (
        f"{view['count']} failure(s) since {view['since']}\n\n"
        + grouped
        + "\n\n"
        + table(["FINISHED", "CLUSTER", "NODE", "IMAGE", "STATE", "REASON"], rows)
    )
