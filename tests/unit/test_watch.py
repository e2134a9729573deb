"""`prefetcher status --watch`, driven with made-up views and a sleep that does not sleep."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from io import StringIO
from typing import Any

import pytest
from prefetcher.errors import ImageNotFoundError
from prefetcher_cli import watch
from rich.console import Console

from tests.unit.cli_views import node, status_view

IMAGE = "ml/trainer:v1.4.0"


def views(*states: tuple[str, ...] | Exception) -> Callable[[], dict[str, Any]]:
    """A fetch that returns, call after call, a view whose nodes are in the given states (or
    raises the given error); past the end, the last again."""
    calls = iter(states)
    last: list[tuple[str, ...] | Exception] = []

    def fetch() -> dict[str, Any]:
        step = next(calls, None)
        if step is not None:
            last[:] = [step]
        current = last[0]
        if isinstance(current, Exception):
            raise current
        return status_view(*(node(f"i-0{i}", state) for i, state in enumerate(current)))

    return fetch


class Sleeps:
    def __init__(self) -> None:
        self.seconds: list[float] = []

    def __call__(self, seconds: float) -> None:
        if len(self.seconds) > 50:
            raise AssertionError("the watch did not stop")
        self.seconds.append(seconds)


@pytest.fixture
def sleeps() -> Iterator[Sleeps]:
    yield Sleeps()


def plain_console() -> tuple[Console, StringIO]:
    out = StringIO()
    return Console(file=out, force_terminal=False), out


def test_it_stops_once_every_node_is_terminal(sleeps):
    # Given nodes that are requested, then pulling, then cached or failed
    fetch = views(("requested", "requested"), ("in-progress", "requested"), ("cached", "failed"))
    console, _ = plain_console()
    # When the status is watched every 2 s
    final = watch.watch(fetch, image=IMAGE, interval=2, out=console, sleep=sleeps)
    # Then it read three times, slept twice the interval, and returned the terminal view
    assert sleeps.seconds == [2, 2]
    assert [n["state"] for n in final["nodes"]] == ["cached", "failed"]


def test_an_unknown_record_is_still_awaited_it_is_sent_again(sleeps):
    # Given a node whose image was not reported (unknown: the audit function sends it again)
    fetch = views(("cached", "unknown"), ("cached", "requested"), ("cached", "present"))
    console, _ = plain_console()
    # When the status is watched
    watch.watch(fetch, image=IMAGE, interval=1, out=console, sleep=sleeps)
    # Then it went on until the record settled
    assert len(sleeps.seconds) == 2


def test_without_a_terminal_it_prints_one_block_per_change(sleeps):
    # Given a status that changes twice over five reads
    fetch = views(("requested",), ("requested",), ("in-progress",), ("in-progress",), ("cached",))
    console, out = plain_console()
    # When it is watched without a terminal
    watch.watch(fetch, image=IMAGE, out=console, sleep=sleeps)
    # Then three blocks were printed, a blank line apart, each the status table in its state
    blocks = out.getvalue().rstrip("\n").split("\n\n")
    assert len(sleeps.seconds) == 4
    assert [block.splitlines()[-1].split()[2] for block in blocks] == ["requested", "in-progress", "cached"]
    assert all(block.startswith("image      ml/trainer@sha256:4d2b") for block in blocks)
    assert "\x1b" not in out.getvalue()


def test_an_image_not_recorded_yet_is_waited_for_with_a_note(sleeps):
    # Given an image whose push is not recorded yet, then recorded with no node yet, then cached
    missing = ImageNotFoundError("no push of ml/trainer:v1.4.0 is recorded in table audit")
    fetch = views(missing, missing, (), ("cached",))
    console, out = plain_console()
    # When it is watched
    watch.watch(fetch, image=IMAGE, out=console, sleep=sleeps)
    # Then it said once what it waited for, then once that no node had reported, then the table
    blocks = out.getvalue().rstrip("\n").split("\n\n")
    assert blocks[0] == f"waiting for {IMAGE} to be recorded (no push of ml/trainer:v1.4.0 is recorded in table audit)"
    assert blocks[1].endswith(f"waiting for the first node of {IMAGE} to report")
    assert "cached" in blocks[2].splitlines()[-1]
    assert len(blocks) == 3


def test_with_json_output_it_prints_the_final_view_once(sleeps, capsys):
    # Given a status that changes, and an image not recorded at first
    fetch = views(ImageNotFoundError("not yet"), ("requested",), ("cached",))
    console, out = plain_console()
    # When it is watched with --output json
    final = watch.watch(fetch, image=IMAGE, json_output=True, out=console, sleep=sleeps)
    # Then stdout holds one JSON document, the final view; the note went to stderr
    assert json.loads(out.getvalue()) == final
    assert final["nodes"][0]["state"] == "cached"
    assert capsys.readouterr().err == f"prefetcher: waiting for {IMAGE} to be recorded (not yet)\n"


def test_on_a_terminal_it_redraws_in_place_until_settled(sleeps):
    # Given a terminal, and a status that changes once
    out = StringIO()
    console = Console(file=out, force_terminal=True, color_system="standard", width=120)
    fetch = views(("in-progress",), ("cached",))
    # When it is watched
    watch.watch(fetch, image=IMAGE, out=console, sleep=sleeps, now=lambda: datetime(2026, 12, 2, 10, 0, 5, tzinfo=UTC))
    # Then the second drawing moved the cursor back over the first (in place), and the last says so
    text = out.getvalue()
    first, _, redrawn = text.partition("\x1b[1A\x1b[2K")  # cursor up, erase the line: Live's redraw
    assert redrawn
    assert "\x1b[33min-progress" in first and "refreshed every 5 s; Ctrl-C to stop" in first
    assert "\x1b[32mcached" in redrawn and "10:00:05 every node has settled" in redrawn
    assert len(sleeps.seconds) == 1


def test_ctrl_c_ends_the_watch_at_once():
    # Given a watch interrupted while it sleeps
    def interrupted(_seconds: float) -> None:
        raise KeyboardInterrupt

    console, _ = plain_console()
    # When it is watched, Then the interrupt reaches the caller (main exits 130)
    with pytest.raises(KeyboardInterrupt):
        watch.watch(views(("requested",)), image=IMAGE, out=console, sleep=interrupted)
