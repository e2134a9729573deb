"""`prefetcher status IMAGE --watch`: the status view again every interval until every node's
record has settled, or Ctrl-C.

Settled: no node is `requested` or `in-progress` (the states NodeState does not call terminal),
nor `unknown` (terminal for its command, but the audit function sends the image again, at most
three commands). An image with no node record yet is not settled: right after a push the records
come with the first status events. An image not recorded yet (a pipeline may watch right after
its push) is waited for, with a note.

On a terminal the view is redrawn in place (rich.live.Live); elsewhere it is printed again only
when it changed, one block per change, blocks a blank line apart; with `--output json` nothing is
printed until the end, then the final view once. The poll (`fetch`) and `sleep` are passed in, so
a test drives the loop without a table or a clock."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from prefetcher.errors import ImageNotFoundError
from prefetcher.states import NodeState
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.text import Text

from prefetcher_cli import output

DEFAULT_INTERVAL, MIN_INTERVAL = 5.0, 1.0
# The states in which a node's record is still expected to move.
MOVING = frozenset({str(s) for s in NodeState if not s.terminal} | {str(NodeState.UNKNOWN)})

Fetch = Callable[[], dict[str, Any]]
pause = time.sleep


def settled(view: dict[str, Any]) -> bool:
    """Every node of the view has a record, and none is still moving."""
    return bool(view["nodes"]) and not any(node["state"] in MOVING for node in view["nodes"])


def _screen(view: dict[str, Any] | None, note: str, footer: str = "") -> RenderableType:
    parts: list[RenderableType] = []
    if view is not None:
        parts.append(output.status(view))
    if note:
        parts.append(Text(note, style="yellow"))
    if footer:
        parts.append(Text(footer, style="dim"))
    return Group(*parts)


def watch(
    fetch: Fetch,
    *,
    image: str,
    json_output: bool = False,
    interval: float = DEFAULT_INTERVAL,
    out: Console | None = None,
    sleep: Callable[[float], None] | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> dict[str, Any]:
    """Poll `fetch` every `interval` seconds until the view is settled; returns the final view.
    `sleep` defaults to `pause`, looked up at each call (a test of the command replaces it)."""
    watcher = _Watcher(fetch, image, interval, out or output.console(), sleep or pause, now)
    if json_output:
        return watcher.quietly()
    if watcher.out.is_terminal:
        return watcher.live()
    return watcher.blocks()


@dataclass(frozen=True)
class _Watcher:
    fetch: Fetch
    image: str
    interval: float
    out: Console
    sleep: Callable[[float], None]
    now: Callable[[], datetime]

    def poll(self) -> tuple[dict[str, Any] | None, str]:
        """The view, or None; and a note saying what is awaited, if anything."""
        try:
            view = self.fetch()
        except ImageNotFoundError as error:
            return None, f"waiting for {self.image} to be recorded ({error})"
        if not view["nodes"]:
            return view, f"waiting for the first node of {self.image} to report"
        return view, ""

    def quietly(self) -> dict[str, Any]:
        noted = ""
        while True:
            view, note = self.poll()
            if view is not None and settled(view):
                self.out.file.write(output.as_json(view) + "\n")
                return view
            if note and note != noted:
                print(f"prefetcher: {note}", file=sys.stderr)  # stdout holds the JSON alone
                noted = note
            self.sleep(self.interval)

    def blocks(self) -> dict[str, Any]:
        shown: tuple[dict[str, Any] | None, str] | None = None
        while True:
            view, note = self.poll()
            if (view, note) != shown:
                if shown is not None:
                    self.out.file.write("\n")
                output.show(_screen(view, note), self.out)
                shown = (view, note)
            if view is not None and settled(view):
                return view
            self.sleep(self.interval)

    def live(self) -> dict[str, Any]:
        with Live(console=self.out, auto_refresh=False, redirect_stderr=False) as screen:
            while True:
                view, note = self.poll()
                done = view is not None and settled(view)
                footer = f"{self.now():%H:%M:%S} " + (
                    "every node has settled" if done else f"refreshed every {self.interval:g} s; Ctrl-C to stop"
                )
                screen.update(output.for_terminal(_screen(view, note, footer)), refresh=True)
                if done and view is not None:
                    return view
                self.sleep(self.interval)
