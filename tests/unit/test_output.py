"""How the CLI draws its views: coloured on a terminal, plain text anywhere else (the layout scripts
read: the same columns, two spaces apart, nothing wrapped or cut)."""

from __future__ import annotations

import re
from io import StringIO
from typing import Any

import pytest
from prefetcher.states import NodeState
from prefetcher_cli import output
from rich.console import Console

from tests.unit.cli_views import node, status_view

ESCAPE = "\x1b"
BOX_DRAWING = re.compile("[\u2500-\u257f]")
LONG_REASON = "pull failed: " + "registry said no; " * 10 + "x" * 7  # 200 characters
assert len(LONG_REASON) == 200


def rendered(renderable: Any, *, terminal: bool, width: int = 80) -> str:
    out = StringIO()
    console = Console(file=out, force_terminal=terminal, color_system="standard" if terminal else None, width=width)
    output.show(renderable, console)
    return out.getvalue()


def test_on_a_terminal_a_failed_state_is_red_and_a_cached_one_green(monkeypatch):
    # Given a terminal that allows colour, and a view with a cached and a failed node
    monkeypatch.delenv("NO_COLOR", raising=False)
    view = status_view(node("i-01", "cached", seconds=12.5), node("i-02", "failed", "no space left on device"))
    # When the status view is shown
    text = rendered(output.status(view), terminal=True)
    # Then each state carries its colour's escape code, and the header has a rule under it
    assert "\x1b[31mfailed" in text
    assert "\x1b[32mcached" in text
    assert "\u2500" in text


def test_every_node_state_has_a_colour():
    # Given every state a record can take
    # Then each has a colour: green when the node holds the image, yellow when it still moves, red otherwise
    assert set(output.STATE_STYLES) == {str(state) for state in NodeState}
    for state in NodeState:
        expected = "green" if state.holds_image else "yellow" if not state.is_failure and state != "evicted" else "red"
        assert output.STATE_STYLES[state] == expected, state


def test_no_color_leaves_a_terminal_without_colour(monkeypatch):
    # Given a terminal and NO_COLOR set
    monkeypatch.setenv("NO_COLOR", "1")
    view = status_view(node("i-02", "failed", "no space left on device"))
    # When the status view is shown
    text = rendered(output.status(view), terminal=True)
    # Then no colour code is written
    assert not re.search(r"\x1b\[3[0-7]m", text)
    assert "failed" in text


def test_without_a_terminal_the_table_is_plain_aligned_and_a_long_reason_stays_on_its_line():
    # Given a view with a 200-character reason, and a console that is not a terminal (80 columns)
    view = status_view(
        node("i-0a1b2c3d4e5f60001", "cached", seconds=12.5),
        node("i-02", "failed", LONG_REASON),
        node("i-3", "requested"),
    )
    # When the status view is shown
    text = rendered(output.status(view), terminal=False)
    lines = text.splitlines()
    # Then there are no escape codes, no box-drawing characters and no trailing spaces
    assert ESCAPE not in text
    assert not BOX_DRAWING.search(text)
    assert all(line == line.rstrip() for line in lines)
    # And the reason is whole, on its node's line (not wrapped, not cut)
    (failed,) = [line for line in lines if " failed " in line]
    assert failed.endswith(LONG_REASON)
    # And every column starts where its header does
    header = next(line for line in lines if line.startswith("CLUSTER"))
    rows = [line for line in lines if line.startswith("ml-prod")]
    assert len(rows) == 3
    for column, values in {"NODE": ("i-0a1b", "i-02", "i-3"), "STATE": ("cached", "failed", "requested")}.items():
        assert [row.index(value) for row, value in zip(rows, values, strict=True)] == [header.index(column)] * 3
    assert failed.index(LONG_REASON) == header.index("REASON")


def test_the_plain_layout_is_the_one_scripts_read():
    # Given a status view
    view = status_view(node("i-01", "cached", seconds=12.5), node("i-02", "failed", "boom"))
    view["summary"] = {"cached": 1, "failed": 1}
    # When it is shown without a terminal
    text = rendered(output.status(view), terminal=False)
    # Then the header lines and the columns are as before rich drew them: two spaces apart
    assert text == (
        "image      ml/trainer@sha256:4d2b\n"
        "tags       v1.4.0   (asked for v1.4.0)\n"
        "pushed     2026-12-02T09:59:00Z\n"
        "nodes      cached 1, failed 1\n"
        "to cached  p50 12.5 s, p95 12.5 s\n"
        "CLUSTER  NODE  STATE   FINISHED              SECONDS  SIZE     REASON\n"
        "ml-prod  i-01  cached  2026-12-02T10:00:00Z  12.5     1.2 GiB\n"
        "ml-prod  i-02  failed  2026-12-02T10:00:00Z                    boom\n"
    )


def test_text_in_a_cell_is_never_read_as_markup():
    # Given a reason that looks like rich markup
    view = status_view(node("i-02", "failed", "[bold red]not markup[/] :smile:"))
    # When it is shown, on a terminal or not
    for terminal in (True, False):
        # Then it comes out as written
        assert "[bold red]not markup[/] :smile:" in rendered(output.status(view), terminal=terminal, width=200)


def test_redrive_and_verify_are_plain_text_without_a_terminal():
    # Given a redrive report with reasons, and a fleet check request
    redriven = {
        "queue": "q",
        "destination": "f",
        "waiting": 2,
        "moved": 2,
        "dry_run": False,
        "reasons": [{"reason": LONG_REASON, "count": 2}],
    }
    verified = {"event_id": "e-1", "source": "s", "detail_type": "Fleet Check Requested", "detail": {"clusters": []}}
    # When each is shown without a terminal
    text = rendered(output.redriven(redriven), terminal=False)
    # Then the reasons' table is plain, its long reason whole
    assert text == f"q: 2 waiting; moved 2 to f\nCOUNT  REASON\n2      {LONG_REASON}\n"
    assert rendered(output.verified(verified), terminal=False).splitlines()[1] == (
        "fleet check of every target cluster: catch-up of nodes lacking a current image, then an inventory"
    )


@pytest.mark.parametrize("renderer", ["node", "coverage", "failures"])
def test_the_other_views_are_plain_without_a_terminal(renderer):
    # Given the other views, each with a long reason or many states
    views = {
        "node": {
            "instance_id": "i-01", "cluster": "ml-prod", "node_group": None, "state": "warm", "reason": None,
            "first_seen_at": None, "joined_at": "t0", "left_at": None, "warm_at": None, "warm_seconds": None,
            "images": [{"image": "ml/trainer@sha256:4d2b", "tag": "v1", "state": "given-up", "finished_at": "t1",
                        "verified_at": None, "seconds": None, "bytes": None, "reason": LONG_REASON}],
        },
        "coverage": {"clusters": [{
            "cluster": "ml-prod", "nodes": 3, "node_states": {"warm": 3}, "last_verified_at": None,
            "time_to_warm_seconds": {"p50": None, "p95": None},
            "images": [{"image": "ml/trainer:v1", "digest": "sha256:4d2b5b8e1b7f0a0c9e4b", "nodes": 3, "holding": 1,
                        "percent": 33.3, "evicted": 1, "given_up": 1,
                        "states": {"cached": 1, "given-up": 1, "evicted": 1}}],
        }]},
        "failures": {
            "since": "t0", "count": 1, "by_reason": [{"state": "timed-out", "reason": LONG_REASON, "count": 1}],
            "failures": [{"finished_at": "t1", "cluster": "ml-prod", "instance_id": "i-01",
                          "image": "ml/trainer@sha256:4d2b", "state": "timed-out", "reason": LONG_REASON}],
        },
    }  # fmt: skip
    # When each is shown without a terminal
    text = rendered(getattr(output, renderer)(views[renderer]), terminal=False)
    # Then it is plain text, long cells whole on their line
    assert ESCAPE not in text and not BOX_DRAWING.search(text)
    assert all(line == line.rstrip() for line in text.splitlines())
    assert LONG_REASON in text or "cached 1, given-up 1, evicted 1" in text
