"""The rollout path: when SSM says a push command of our document ended (`EC2 Command
Status-change Notification`, terminal status), put one `Image Prefetch Rollout Completed` event
per image of the command on the default bus, built from the audit table: the command's node
records by state, the image's coverage of the cluster's live nodes, the time to cached, and the
failures grouped by reason (docs/rollout-events.md, docs/rollout-event.schema.json).

Only commands of kind `push` are rollouts; join, again and inventory commands are per-node
maintenance (a node that joined, an image sent again, an inventory) and emit nothing.

Ordering: the command's event can arrive before the audit function has applied the last
invocations' events. `ListCommands` says how many invocations the command had (TargetCount);
while fewer of this command's node records are terminal, the event is retried
(`AuditNotCaughtUpError`), until `grace_seconds` after the command ended or the queue's last
receive: then it is emitted with what is recorded and how many invocations are not
(`not-recorded`), never dropped."""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aws_lambda_powertools import Logger

from prefetcher import bus, ssm
from prefetcher.errors import CommandNotFoundError, TransientError
from prefetcher.events import CommandStatusEvent
from prefetcher.refs import ImageRef
from prefetcher.settings import RolloutSettings
from prefetcher.states import TERMINAL_STATUSES, NodeState
from prefetcher.store import AuditTable
from prefetcher.store.commands import CommandRecord
from prefetcher.store.rows import NodeImageRow, NodeRow
from prefetcher.timestamps import iso, parse_iso

logger = Logger(child=True)

DETAIL_TYPE = "Image Prefetch Rollout Completed"
SCHEMA_VERSION = "1"
ROLLOUT_KINDS = frozenset({"push"})


class AuditNotCaughtUpError(TransientError):
    """The audit table has not recorded every invocation of the command yet: retried."""


@dataclass(frozen=True)
class Outcome:
    action: str  # emitted | ignored
    reason: str = ""
    details: tuple[dict[str, Any], ...] = ()
    event_ids: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "reason": self.reason,
            "event_ids": list(self.event_ids),
            "images": [d["image"] for d in self.details],
            "not_recorded": sum(d["nodes"]["not-recorded"] for d in self.details),
        }


def percentile(values: Sequence[float], share: float) -> float | None:
    """As `prefetcher status` computes it (prefetcher_cli.reports._percentile): inclusive
    quantiles, rounded to milliseconds; one value is its own percentile; none: None."""
    if not values:
        return None
    if len(values) == 1:
        return round(values[0], 3)
    return round(statistics.quantiles(values, n=100, method="inclusive")[int(share * 100) - 1], 3)


_TERMINAL_STATES = frozenset(str(state) for state in NodeState if state.terminal)


def _terminal(record: NodeImageRow) -> bool:
    return record.state in _TERMINAL_STATES


@dataclass(frozen=True)
class ImageRollout:
    """What the table says of one image of the command, in the command's cluster."""

    image: ImageRef
    own: list[NodeImageRow]  # this command's records of the image
    live_nodes: list[NodeRow]
    coverage: list[NodeImageRow]  # every live node's record of the image (any command)
    targeted: int | None = None  # the command's invocations (ListCommands), if SSM knows it

    @property
    def recorded(self) -> int:
        return len({r.instance_id for r in self.own if _terminal(r)})

    @property
    def not_recorded(self) -> int:
        return max(self.targeted - self.recorded, 0) if self.targeted is not None else 0


def detail(command: CommandRecord, status: str, completed_at: datetime, rollout: ImageRollout) -> dict[str, Any]:
    """The event's detail (docs/rollout-event.schema.json)."""
    image = rollout.image
    live = {n.instance_id for n in rollout.live_nodes} | {r.instance_id for r in rollout.coverage}
    holding = sum(1 for r in rollout.coverage if r.holds)
    times = [
        max((parse_iso(r.finished_at) - parse_iso(r.requested_at or iso(command.requested_at))).total_seconds(), 0.0)
        for r in rollout.own
        if r.holds and r.finished_at
    ]
    failures = Counter((r.state, r.reason or "") for r in rollout.own if _terminal(r) and not r.holds)
    return {
        "schema-version": SCHEMA_VERSION,
        "image": f"{image.registry}/{image.repository}@{image.digest}" if image.registry else image.pinned,
        "registry": image.registry,
        "repository": image.repository,
        "digest": image.digest,
        "tag": image.tag,
        "cluster": command.cluster,
        "command-id": command.command_id,
        "command-status": status,
        "images-in-command": len(command.images),
        "requested-at": iso(command.requested_at),
        "completed-at": iso(completed_at),
        "complete": rollout.not_recorded == 0,
        "nodes": {
            "targeted": rollout.targeted,
            "recorded": rollout.recorded,
            "not-recorded": rollout.not_recorded,
            "by-state": dict(sorted(Counter(r.state for r in rollout.own).items())),
        },
        "coverage": {
            "live-nodes": len(live),
            "holding": holding,
            "percent": round(100 * holding / len(live), 1) if live else 0.0,
        },
        "time-to-cached-seconds": {"p50": percentile(times, 0.5), "p95": percentile(times, 0.95), "count": len(times)},
        "failures": [
            {"state": state, "reason": reason, "count": count}
            for (state, reason), count in sorted(failures.items(), key=lambda kv: (-kv[1], kv[0]))
        ],
    }


def read_rollout(table: AuditTable, command: CommandRecord, image: ImageRef, targeted: int | None) -> ImageRollout:
    """The command's records of `image` (one Query of the image's partition), the cluster's live
    nodes and the image's coverage in it (two Queries on gsi2)."""
    _, records = table.queries.image(image.repository, image.digest)
    own = [r for r in records if r.cluster == command.cluster and r.command_id == command.command_id]
    return ImageRollout(
        image=image,
        own=own,
        live_nodes=table.queries.live_nodes(command.cluster),
        coverage=table.queries.coverage(command.cluster, image.repository, image.digest),
        targeted=targeted,
    )


@dataclass
class Dependencies:
    """What the path calls outside the table (tests give fakes)."""

    target_count: Callable[[str], int | None] = ssm.command_target_count
    publish: Callable[[Sequence[bus.BusEvent]], list[str]] = bus.put_events
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))


def handle_command_status(
    event: CommandStatusEvent,
    settings: RolloutSettings,
    table: AuditTable,
    receive_count: int = 1,
    dependencies: Dependencies | None = None,
) -> Outcome:
    """Emit the command's rollout events, ignore the command (with the reason), or raise a
    TransientError for the queue to retry it."""
    deps = dependencies or Dependencies()
    found = event.detail
    if found.document_name != settings.document_name:
        return Outcome("ignored", f"document {found.document_name} is not ours")
    if found.status not in TERMINAL_STATUSES:
        return Outcome("ignored", f"status {found.status} is not the end of the command")
    waited = deps.now() - event.time
    last_try = receive_count >= settings.max_receives or waited >= timedelta(seconds=settings.grace_seconds)
    command = table.commands.get(found.command_id)
    if command is None:
        if last_try:
            return Outcome("ignored", "the command is not recorded in the audit table: not sent by this service")
        raise CommandNotFoundError(f"command {found.command_id} is not recorded (yet)")
    if command.kind not in ROLLOUT_KINDS:
        return Outcome("ignored", f"a {command.kind} command is per-node maintenance, not a rollout")
    targeted = deps.target_count(command.command_id)
    rollouts = [read_rollout(table, command, image, targeted) for image in command.images]
    missing = max((r.not_recorded for r in rollouts), default=0)
    if missing and not last_try:
        raise AuditNotCaughtUpError(
            f"command {command.command_id}: {missing} of {targeted} invocations not recorded yet "
            f"({waited.total_seconds():.0f} s after it ended, receive {receive_count})"
        )
    if missing:
        logger.warning(
            "emitting a rollout the audit table has not fully recorded",
            extra={"command_id": command.command_id, "not_recorded": missing, "receive_count": receive_count},
        )
    details = tuple(detail(command, found.status, event.time, r) for r in rollouts)
    ids = deps.publish([bus.BusEvent(DETAIL_TYPE, d, event.time) for d in details])
    return Outcome("emitted", details=details, event_ids=tuple(ids))
