"""Tables for people, JSON for scripts.

Each view's renderer (status, node, coverage, failures, reasons, verified) returns a rich
renderable; `show` prints it. On a terminal the states are coloured (green: the node holds the
image; yellow: still moving; red: failed for now or for good), headers are bold and each table has
a rule under its header; rich honours NO_COLOR. Anywhere else (a pipe, a file, CI) the same
columns come out as plain text: no escape codes, no box-drawing characters, no cell wrapped or cut
whatever its length, no trailing spaces, columns two spaces apart, so scripts that read the
plain layout keep working."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping, Sequence
from io import StringIO
from typing import IO, Any

from prefetcher.states import NodeState
from rich import box
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

GREEN, YELLOW, RED = "green", "yellow", "red"
STATE_STYLES: dict[str, str] = {
    NodeState.CACHED: GREEN,
    NodeState.PRESENT: GREEN,
    NodeState.REQUESTED: YELLOW,
    NodeState.IN_PROGRESS: YELLOW,
    NodeState.UNKNOWN: YELLOW,  # not reported: the audit function sends it again
    NodeState.FAILED: RED,
    NodeState.TIMED_OUT: RED,
    NodeState.UNDELIVERABLE: RED,
    NodeState.SKIPPED_DISK: RED,
    NodeState.GIVEN_UP: RED,
    NodeState.EVICTED: RED,
}
# Columns of free text: on a terminal they wrap within their column; other columns never wrap.
FREE_TEXT = frozenset({"REASON", "STATES"})
FREE_TEXT_MIN_WIDTH = 24
# Wide enough that rich never wraps nor cuts a plain line (a reason is at most 1,000 characters).
PLAIN_WIDTH = 1 << 20


def as_json(value: Any) -> str:
    return json.dumps(value, indent=2, default=str)


def console(file: IO[str] | None = None, *, terminal: bool | None = None) -> Console:
    """The console `show` prints to: a terminal or not as rich detects it (stdout a TTY,
    FORCE_COLOR, TERM), unless `terminal` says. Cell text is never read as markup or emoji."""
    return Console(file=file, force_terminal=terminal, highlight=False, markup=False, emoji=False)


def show(renderable: RenderableType, out: Console | None = None) -> None:
    """Print a view: coloured, with rules under table headers, on a terminal; plain otherwise."""
    out = out or console()
    if out.is_terminal:
        out.print(for_terminal(renderable))
    else:
        out.file.write(plain(renderable) + "\n")
        out.file.flush()


def plain(renderable: RenderableType) -> str:
    """The renderable as plain text: no escape codes, no boxes, nothing wrapped, lines rstripped."""
    buffer = StringIO()
    Console(
        file=buffer,
        force_terminal=False,
        color_system=None,
        width=PLAIN_WIDTH,
        highlight=False,
        markup=False,
        emoji=False,
    ).print(renderable)
    return "\n".join(line.rstrip() for line in buffer.getvalue().splitlines())


def for_terminal(renderable: RenderableType) -> RenderableType:
    """Tables dressed for a terminal: a bold header with a rule under it."""
    if isinstance(renderable, Table):
        dressed = copy.copy(renderable)
        dressed.box, dressed.header_style = box.SIMPLE_HEAD, "bold"
        dressed.columns = [copy.copy(column) for column in renderable.columns]
        for column in dressed.columns:
            if column.header in FREE_TEXT:
                column.min_width = FREE_TEXT_MIN_WIDTH  # narrow terminals squeeze the other columns
        return dressed
    if isinstance(renderable, Group):
        return Group(*(for_terminal(part) for part in renderable.renderables))
    return renderable


def state(value: object) -> Text:
    """A state, coloured by what it means."""
    text = "" if value is None else str(value)
    return Text(text, style=STATE_STYLES.get(text, ""))


def counts(by_state: Mapping[str, object]) -> Text:
    """`cached 3, failed 1` with each state coloured."""
    return Text(", ").join(Text.assemble(state(name), f" {count}") for name, count in by_state.items())


def _cell(value: object) -> Text:
    if isinstance(value, Text):
        return value
    return Text("" if value is None else str(value))


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> Table:
    """Left-aligned columns two spaces apart; a cell is text, or a Text already styled."""
    grid = Table(box=None, padding=(0, 1), pad_edge=False, show_edge=False, header_style="")
    for header in headers:
        wraps = header in FREE_TEXT
        grid.add_column(header, no_wrap=not wraps, overflow="fold" if wraps else "ellipsis")
    for row in rows:
        grid.add_row(*(_cell(value) for value in row))
    return grid


def _lines(lines: Iterable[str | Text]) -> list[Text]:
    return [line if isinstance(line, Text) else Text(line) for line in lines]


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


def status(view: dict[str, Any]) -> Group:
    ttc = view["time_to_cached_seconds"]
    head: list[str | Text] = [
        f"image      {view['image']}",
        f"tags       {', '.join(view['tags']) or '-'}" + (f"   (asked for {view['tag']})" if view["tag"] else ""),
        f"pushed     {view['pushed_at'] or '-'}"
        + (f"   superseded by {view['superseded_by']}" if view["superseded_by"] else ""),
        Text("nodes      ") + (counts(view["summary"]) if view["summary"] else Text("none yet")),
        f"to cached  p50 {_or_dash(ttc['p50'])} s, p95 {_or_dash(ttc['p95'])} s",
    ]
    rows = [
        (
            n["cluster"],
            n["instance_id"],
            state(n["state"]),
            n["finished_at"] or "",
            n["seconds"],
            _size(n["bytes"]),
            n["reason"],
        )
        for n in view["nodes"]
    ]
    headers = ["CLUSTER", "NODE", "STATE", "FINISHED", "SECONDS", "SIZE", "REASON"]
    return Group(*_lines(head), table(headers, rows))


def node(view: dict[str, Any]) -> Group:
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
    ]
    rows = [
        (i["image"], i["tag"] or "", state(i["state"]), i["finished_at"] or "", i["verified_at"] or "-",
         i["seconds"], _size(i["bytes"]), i["reason"])
        for i in view["images"]
    ]  # fmt: skip
    headers = ["IMAGE", "TAG", "STATE", "FINISHED", "VERIFIED", "SECONDS", "SIZE", "REASON"]
    return Group(*_lines(head), table(headers, rows))


def coverage(view: dict[str, Any]) -> Group:
    rows: list[Sequence[object]] = []
    summaries = []
    for cluster in view["clusters"]:
        warm = cluster["time_to_warm_seconds"]
        summary = Text(f"{cluster['cluster']}: {cluster['nodes']} live node(s)")
        if cluster["node_states"]:
            summary += Text(" (") + Text(", ").join(
                Text(f"{k} {v}") for k, v in sorted(cluster["node_states"].items())
            ) + Text(")")  # fmt: skip
        if warm["p50"] is not None:
            summary += Text(f"; running to warm p50 {warm['p50']} s, p95 {warm['p95']} s")
        summary += Text(f"; last verified {cluster['last_verified_at'] or 'never'}")
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
                    counts(image["states"]),
                )
            )
    headers = ["CLUSTER", "IMAGE", "DIGEST", "NODES", "HOLDING", "COVERED", "EVICTED", "GIVEN-UP", "STATES"]
    return Group(*summaries, Text(""), table(headers, rows))


def failures(view: dict[str, Any]) -> Group:
    if not view["failures"]:
        return Group(Text(f"no failures since {view['since']}"))
    grouped = table(
        ["COUNT", "STATE", "REASON"], [(r["count"], state(r["state"]), r["reason"]) for r in view["by_reason"]]
    )
    rows = [
        (f["finished_at"], f["cluster"], f["instance_id"], f["image"], state(f["state"]), f["reason"])
        for f in view["failures"]
    ]
    return Group(
        Text(f"{view['count']} failure(s) since {view['since']}"),
        Text(""),
        grouped,
        Text(""),
        table(["FINISHED", "CLUSTER", "NODE", "IMAGE", "STATE", "REASON"], rows),
    )


def redriven(view: dict[str, Any]) -> Group:
    """`prefetcher redrive`: what waited, what moved (or would), and the messages' reasons."""
    verb = "would move" if view["dry_run"] else "moved"
    count = view["waiting"] if view["dry_run"] else view["moved"]
    parts: list[RenderableType] = [
        Text(f"{view['queue']}: {view['waiting']} waiting; {verb} {count} to {view['destination']}")
    ]
    if view["reasons"]:
        parts.append(table(["COUNT", "REASON"], [(r["count"], r["reason"]) for r in view["reasons"]]))
    return Group(*parts)


def verified(view: dict[str, Any]) -> Group:
    """`prefetcher verify`: the request put on the bus, and what to follow it with."""
    which = ", ".join(view["detail"]["clusters"]) or "every target cluster"
    return Group(
        *_lines(
            [
                f"{view['detail_type']} ({view['source']}) put on the default event bus: event {view['event_id']}",
                f"fleet check of {which}: catch-up of nodes lacking a current image, then an inventory",
                "follow it with `prefetcher coverage` (last verified, evicted, given-up) and `prefetcher failures`",
            ]
        )
    )
