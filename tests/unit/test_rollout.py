"""The rollout path's decisions (prefetcher.rollout), with an in-memory table: which commands
emit, when an early event is retried and when it is emitted anyway, and what the detail holds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from prefetcher import rollout
from prefetcher.errors import CommandNotFoundError
from prefetcher.events import CommandStatusEvent
from prefetcher.refs import ImageRef
from prefetcher.settings import RolloutSettings
from prefetcher.store.commands import CommandRecord
from prefetcher.store.rows import NodeImageRow, NodeRow

DOCUMENT = "eks-image-prefetcher-PrefetchDocument"
COMMAND = "5b2a7f64-1c0e-4c4e-9a55-3f1d2a6b7c80"
DIGEST = "sha256:" + "ab" * 32
IMAGE = ImageRef("123456789012.dkr.ecr.us-east-1.amazonaws.com", "ml/trainer", DIGEST, "v1.4.0")
SENT = datetime(2026, 11, 29, 10, 15, 1, tzinfo=UTC)
ENDED = datetime(2026, 11, 29, 10, 19, 12, tzinfo=UTC)
SETTINGS = RolloutSettings.model_validate({"TABLE_NAME": "audit", "DOCUMENT_NAME": DOCUMENT})


def event(status: str = "Success", document: str = DOCUMENT) -> CommandStatusEvent:
    return CommandStatusEvent.model_validate(
        {
            "version": "0", "id": "8c1e6f0a-3d5b-4e7a-9c2f-0b1d4e6a8c30", "account": "123456789012",
            "detail-type": "EC2 Command Status-change Notification", "source": "aws.ssm",
            "time": "2026-11-29T10:19:12Z", "region": "us-east-1", "resources": [],
            "detail": {"command-id": COMMAND, "document-name": document, "requested-date-time": "2026-11-29T10:15:01.482Z",
                       "status": status, "expire-after": "2026-11-29T11:25:01.482Z", "parameters": {}},
        }
    )  # fmt: skip


def record(instance: str, state: str, command: str = COMMAND, seconds: float = 0, reason: str = "") -> NodeImageRow:
    holds = state in ("cached", "present")
    return NodeImageRow(
        instance_id=instance, repository=IMAGE.repository, digest=DIGEST, state=state, cluster="ml-prod",
        holds=holds, reason=reason or None, command_id=command, requested_at=SENT.isoformat(),
        finished_at=(SENT + timedelta(seconds=seconds)).isoformat() if state not in ("requested", "in-progress") else None,
    )  # fmt: skip


def table(kind: str = "push", records: list[NodeImageRow] | None = None, live: int = 0) -> Any:
    records = records or []
    command = CommandRecord(COMMAND, kind, "ml-prod", (IMAGE,), SENT)
    return SimpleNamespace(
        commands=SimpleNamespace(get=lambda command_id: command if command_id == COMMAND else None),
        queries=SimpleNamespace(
            image=lambda repository, digest: (None, records),
            live_nodes=lambda cluster: [NodeRow(instance_id=f"i-live{n:013x}") for n in range(live)],
            coverage=lambda cluster, repository, digest: [r for r in records if r.cluster == cluster],
        ),
    )


class Bus:
    def __init__(self, targeted: int | None, now: datetime = ENDED + timedelta(seconds=5)) -> None:
        self.put: list[Any] = []
        self.deps = rollout.Dependencies(target_count=lambda _: targeted, publish=self.publish, now=lambda: now)

    def publish(self, events: Any) -> list[str]:
        self.put += events
        return [f"id-{i}" for i in range(len(events))]


def test_a_push_command_that_ended_puts_one_event_with_counts_coverage_times_and_reasons():
    # Given a push command to 4 nodes: 2 cached (10 s, 30 s), 1 present (no pull), 1 failed;
    # and a live node that the command did not reach, plus a node holding it from another command
    records = [
        record("i-0000000000000001", "cached", seconds=10),
        record("i-0000000000000002", "cached", seconds=30),
        record("i-0000000000000003", "present", seconds=2),
        record("i-0000000000000004", "failed", seconds=5, reason="pull failed: 401"),
        record("i-0000000000000005", "cached", command="99999999-1c0e-4c4e-9a55-3f1d2a6b7c80", seconds=1),
    ]
    bus = Bus(targeted=4)
    # When its command's end is handled
    outcome = rollout.handle_command_status(event("Failed"), SETTINGS, table(records=records, live=1), 1, bus.deps)
    # Then one event, on our detail-type, at the command's end
    assert outcome.action == "emitted"
    (put,) = bus.put
    assert (put.detail_type, put.time) == ("Image Prefetch Rollout Completed", ENDED)
    detail = put.detail
    assert detail["command-status"] == "Failed"
    assert detail["image"] == f"{IMAGE.registry}/ml/trainer@{DIGEST}"
    assert detail["nodes"] == {"targeted": 4, "recorded": 4, "not-recorded": 0,
                               "by-state": {"cached": 2, "failed": 1, "present": 1}}  # fmt: skip
    # coverage: 5 nodes with a record and 1 live node without one; 4 hold it, whichever command
    assert detail["coverage"] == {"live-nodes": 6, "holding": 4, "percent": 66.7}
    # times of this command's holders only (as prefetcher status computes percentiles)
    assert detail["time-to-cached-seconds"] == {"p50": 10.0, "p95": 28.0, "count": 3}
    assert detail["failures"] == [{"state": "failed", "reason": "pull failed: 401", "count": 1}]
    assert detail["complete"] is True


@pytest.mark.parametrize("kind", ["join", "again", "inventory"])
def test_per_node_maintenance_commands_emit_nothing(kind):
    bus = Bus(targeted=1)
    outcome = rollout.handle_command_status(event(), SETTINGS, table(kind), 1, bus.deps)
    assert outcome.action == "ignored"
    assert "per-node maintenance" in outcome.reason
    assert bus.put == []


def test_other_documents_and_unknown_commands_emit_nothing():
    bus = Bus(targeted=1)
    assert (
        rollout.handle_command_status(event(document="AWS-RunShellScript"), SETTINGS, table(), 1, bus.deps).action
        == "ignored"
    )
    # An unknown command is retried (the push may not have recorded it yet), then ignored
    other = table()
    other.commands.get = lambda _: None
    with pytest.raises(CommandNotFoundError):
        rollout.handle_command_status(event(), SETTINGS, other, 1, bus.deps)
    assert rollout.handle_command_status(event(), SETTINGS, other, SETTINGS.max_receives, bus.deps).action == "ignored"
    assert bus.put == []


def test_an_event_the_audit_has_not_caught_up_with_is_retried_then_emitted_with_what_is_missing():
    # Given a command of 3 invocations, of which the table holds one finished and one in progress
    records = [record("i-0000000000000001", "cached", seconds=4), record("i-0000000000000002", "in-progress")]
    bus = Bus(targeted=3)
    # When it is handled on an early receive, within the grace period
    with pytest.raises(rollout.AuditNotCaughtUpError):
        rollout.handle_command_status(event(), SETTINGS, table(records=records), 1, bus.deps)
    assert bus.put == []
    # When it is handled on the queue's last receive: emitted, saying what is not recorded
    outcome = rollout.handle_command_status(event(), SETTINGS, table(records=records), SETTINGS.max_receives, bus.deps)
    assert outcome.action == "emitted"
    (put,) = bus.put
    assert put.detail["nodes"]["not-recorded"] == 2
    assert put.detail["nodes"]["by-state"] == {"cached": 1, "in-progress": 1}
    assert put.detail["complete"] is False
    # And past the grace period, on any receive, too
    late = Bus(targeted=3, now=ENDED + timedelta(seconds=SETTINGS.grace_seconds))
    assert rollout.handle_command_status(event(), SETTINGS, table(records=records), 1, late.deps).action == "emitted"


def test_percentiles_are_those_of_prefetcher_status():
    assert rollout.percentile([], 0.5) is None
    assert rollout.percentile([3.0], 0.95) == 3.0
    assert rollout.percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
