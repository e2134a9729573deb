"""`prefetcher wait` on the local stack (issue 13): 0 once the simulated nodes hold the image, 1 on
timeout, 4 at once when too many nodes failed for good, 5 at once when the tag moved to a newer
digest; without a terminal, one plain line per change; `--output json`; only Queries and
GetItems, never a Scan."""

from __future__ import annotations

import copy
import io
import json
import re

import pytest
from prefetcher_cli import main as cli
from prefetcher_cli import progress, wait

from tests.helpers import CallCounter
from tests.integration.simulated_fleet import IMAGE, PUSH, SimulatedFleet
from tests.integration.test_fleet_check import FailingNodes

NEWER = "sha256:" + "f" * 64


def pushed_not_pulled(fleet: SimulatedFleet) -> None:
    """The push is recorded and its commands sent; no node has run them yet."""
    fleet.stack.put_events(PUSH)
    fleet.stack.run_sources()


def target(percent: float = 100.0, clusters: tuple[str, ...] = ("ml-prod",)) -> wait.Target:
    text = f"{IMAGE.repository}:{IMAGE.tag}@{IMAGE.digest}"
    return wait.Target(text, IMAGE.repository, IMAGE.tag, IMAGE.digest, percent, list(clusters), bool(clusters))


class Clock:
    """A clock that moves only when the wait sleeps; each sleep may also run the world."""

    def __init__(self, on_sleep=None) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []
        self.on_sleep = on_sleep

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        if self.on_sleep:
            self.on_sleep(len(self.sleeps))


def plain(timeout_text: str = "30m") -> tuple[progress.PlainDisplay, io.StringIO]:
    out = io.StringIO()
    return progress.PlainDisplay(out, timeout_text), out


def lines(out: io.StringIO) -> list[str]:
    # without the time stamp each line starts with
    return [re.sub(r"^\S+Z ", "", line) for line in out.getvalue().splitlines()]


def test_wait_returns_0_once_the_nodes_hold_the_image_printing_one_line_per_change(stack):
    # Given three nodes of ml-prod, and a push recorded whose command no node has run yet
    fleet = SimulatedFleet(stack)
    fleet.join(3)
    pushed_not_pulled(fleet)
    # When `wait` polls while nothing changes for two polls, then the nodes run the command
    clock = Clock(on_sleep=lambda n: fleet.run() if n == 3 else None)
    shown, out = plain()
    outcome, snapshot = wait.run(fleet.table, target(), shown, timeout=600, interval=15, clock=clock, sleep=clock.sleep)
    # Then it ends REACHED (exit 0) after the fourth poll, having printed one line per change
    assert outcome is wait.Outcome.REACHED and int(outcome) == 0
    assert clock.sleeps == [15, 15, 15]
    assert lines(out) == [
        f"ml-prod: 0/3 live node(s) hold ml/trainer@{IMAGE.digest[:19]} (0.0%, 3 needed for 100%); 3 waiting; 0 failed",
        f"ml-prod: 3/3 live node(s) hold ml/trainer@{IMAGE.digest[:19]} (100.0%, 3 needed for 100%); 0 waiting; 0 failed",
        f"warm: ml/trainer@{IMAGE.digest[:19]} is held by 100% or more of the live nodes (ml-prod 3/3)",
    ]
    assert snapshot.clusters[0].holding == 3


def test_wait_returns_1_when_the_timeout_passes_first(stack):
    # Given a node whose SSM agent never answers, and a push
    fleet = SimulatedFleet(stack)
    fleet.join(2)
    pushed_not_pulled(fleet)
    # When `wait` (from the command line, not a terminal) waits 1 s
    code = cli.main(["wait", f"{IMAGE.repository}@{IMAGE.digest}", "--cluster", "ml-prod", "--timeout", "1s",
                     "--interval", "5s", "--table", fleet.table.table_name])  # fmt: skip
    # Then it exits 1
    assert code == 1


def test_wait_timeout_names_what_it_was_waiting_for(stack, capsys):
    fleet = SimulatedFleet(stack)
    fleet.join(1)
    pushed_not_pulled(fleet)
    capsys.readouterr()
    assert cli.main(["wait", f"{IMAGE.repository}:{IMAGE.tag}", "--cluster", "ml-prod", "--timeout", "1s",
                     "--table", fleet.table.table_name]) == 1  # fmt: skip
    out = capsys.readouterr().out.splitlines()
    assert "\x1b[" not in "".join(out)  # not a terminal: no escape codes
    assert out[-1].split(" ", 1)[1].startswith("timed out after 1s: ml-prod: 0/1 live node(s) hold")


# MaxErrors 1: the failure does not stop the rollout, whichever node SSM reaches first
@pytest.mark.parametrize("stack", [{"MaxErrors": "1"}], indirect=True)
def test_wait_exits_4_at_once_when_too_many_nodes_failed_for_good(stack):
    # Given two nodes of ml-prod, one of which fails every pull
    fleet = SimulatedFleet(stack)
    nodes = fleet.join(2)
    fleet = SimulatedFleet(stack, FailingNodes({nodes[0]}))
    fleet.push()
    # When `wait` asks for 100 % (a 50 % wait would be reached)
    clock = Clock()
    shown, out = plain()
    outcome, _ = wait.run(fleet.table, target(100), shown, timeout=600, interval=15, clock=clock, sleep=clock.sleep)
    reached, _ = wait.run(fleet.table, target(50), plain()[0], timeout=600, interval=15, clock=clock, sleep=clock.sleep)
    # Then it ends UNREACHABLE at the first poll, naming the reason; 50 % is reached
    assert (outcome, int(outcome), clock.sleeps) == (wait.Outcome.UNREACHABLE, 4, [])
    assert lines(out)[-1] == (
        "cannot be reached: ml-prod: 1 of 2 live node(s) failed for good, 2 must hold it "
        "(1 failed: pull failed: 403 Forbidden from the registry)"
    )
    assert reached is wait.Outcome.REACHED


def test_wait_exits_5_at_once_when_the_tag_moved_to_a_newer_digest(stack, capsys):
    # Given a push of v1.4.0 and then a newer push of the same tag
    fleet = SimulatedFleet(stack)
    fleet.join(1)
    fleet.push()
    newer = copy.deepcopy(PUSH)
    newer["id"] = "7b1f0e0a-1111-4222-8333-944455556668"
    newer["time"] = "2026-11-29T12:00:00Z"
    newer["detail"]["image-digest"] = NEWER
    fleet.push(newer)
    # When a pipeline waits for the digest it pushed first
    capsys.readouterr()
    code = cli.main(["wait", f"ml/trainer:v1.4.0@{IMAGE.digest}", "--output", "json", "--table",
                     fleet.table.table_name])  # fmt: skip
    captured = capsys.readouterr()
    # Then it exits 5 at once, saying which digest the tag points to now
    assert code == 5
    view = json.loads(captured.out)
    assert (view["outcome"], view["exit_code"], view["moved_to"]) == ("moved", 5, NEWER)
    assert f"now points to {NEWER}" in captured.err


def test_wait_by_tag_after_the_pull_reads_only_keys_and_indexes_and_answers_json(stack, capsys):
    # Given the push done on every node of ml-prod (ml-batch has no live node)
    fleet = SimulatedFleet(stack)
    fleet.join(2)
    fleet.push()
    # When `wait ml/trainer:v1.4.0 --output json` runs (clusters: those the push targeted)
    capsys.readouterr()
    with CallCounter() as calls:
        code = cli.main(["wait", "ml/trainer:v1.4.0", "--output", "json", "--table", fleet.table.table_name])
    view = json.loads(capsys.readouterr().out)
    # Then it is warm at once, in both target clusters, having read by key only
    assert code == 0 and view["outcome"] == "reached" and view["digest"] == IMAGE.digest
    assert [(c["cluster"], c["holding"], c["live_nodes"]) for c in view["clusters"]] == [
        ("ml-batch", 0, 0),
        ("ml-prod", 2, 2),
    ]
    operations = {name.split(".", 1)[1] for name in calls.calls if name.startswith("dynamodb.")}
    assert operations == {"GetItem", "Query"}


def test_wait_for_a_cluster_never_sent_anything_is_a_usage_error(stack, capsys):
    fleet = SimulatedFleet(stack)
    fleet.push()
    assert cli.main(["wait", "ml/trainer:v1.4.0", "--cluster", "ml-prdo", "--table", fleet.table.table_name]) == 2
    assert "ml-prdo" in capsys.readouterr().err
