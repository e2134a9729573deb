"""`prefetcher wait`'s verdicts and displays: what makes a cluster reached or unreachable, a bar per
cluster on a terminal, plain lines only on change without one."""

from __future__ import annotations

import io

from prefetcher_cli import progress, wait
from prefetcher_cli.wait import ClusterProgress, Outcome, Snapshot
from rich.console import Console

DIGEST = "sha256:" + "a" * 64


def snapshot(*clusters: ClusterProgress, **changes) -> Snapshot:
    return Snapshot("ml/trainer:v1", "ml/trainer", "v1", DIGEST, 90.0, clusters, **changes)


def test_needed_rounds_up_and_never_exceeds_the_live_nodes():
    assert [wait.needed(live, 90) for live in (0, 1, 9, 10, 11)] == [0, 1, 9, 9, 10]
    assert wait.needed(3, 100) == 3 and wait.needed(3, 33.4) == 2


def test_a_cluster_is_unreachable_only_when_the_waiting_nodes_cannot_make_up_the_share():
    # 10 live, 9 needed: 7 hold, 1 failed, 2 waiting -> still possible; 2 failed -> not
    assert not ClusterProgress("c", live=10, holding=7, failed=1, needed=9).unreachable
    assert ClusterProgress("c", live=10, holding=7, failed=2, needed=9).waiting == 1
    assert ClusterProgress("c", live=10, holding=7, failed=2, needed=9).unreachable


def test_a_moved_tag_wins_over_every_other_outcome_and_no_cluster_is_not_reached():
    done = ClusterProgress("c", live=1, holding=1, failed=0, needed=1)
    assert snapshot(done, moved_to="sha256:" + "b" * 64).outcome is Outcome.MOVED
    assert snapshot(done).outcome is Outcome.REACHED
    assert snapshot(note="no push recorded yet").outcome is None


def test_plain_lines_are_printed_only_when_a_cluster_changes():
    out = io.StringIO()
    shown = progress.PlainDisplay(out, "30m")
    first = snapshot(ClusterProgress("a", 2, 0, 0, 2), ClusterProgress("b", 1, 0, 0, 1))
    shown.update(first)
    shown.update(first)
    shown.update(snapshot(ClusterProgress("a", 2, 1, 0, 2), ClusterProgress("b", 1, 0, 0, 1)))
    printed = out.getvalue().splitlines()
    assert len(printed) == 3
    assert [line.split(" ")[1] for line in printed] == ["a:", "b:", "a:"]


def test_on_a_terminal_each_cluster_gets_a_coloured_bar_and_the_verdict_a_line():
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=160, color_system="standard")
    shown = progress.BarDisplay(console, "30m")
    state = snapshot(
        ClusterProgress("ml-prod", 10, 7, 1, 9, (("failed", "no space left on device", 1),)),
        ClusterProgress("ml-batch", 4, 4, 0, 4),
    )
    shown.update(state)
    shown.close(state, Outcome.TIMED_OUT)
    text = out.getvalue()
    assert "\x1b[" in text  # styled
    assert "━" in text  # rich's bar
    assert "7/10 holding" in text and "4/4 holding" in text
    assert "no space left on device" in text
    assert "timed out after 30m" in text


def test_the_display_is_plain_when_the_stream_is_not_a_terminal():
    assert isinstance(progress.display(io.StringIO(), "1m"), progress.PlainDisplay)
