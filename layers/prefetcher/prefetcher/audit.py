"""The audit path: an SSM invocation of our document changed status; record what it means for
each image on that node."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime

from aws_lambda_powertools import Logger

from prefetcher import ssm, states
from prefetcher.errors import CommandNotFoundError, TransientError
from prefetcher.events import CommandInvocationEvent
from prefetcher.settings import AuditSettings
from prefetcher.states import Invocation, NodeImageUpdate
from prefetcher.store import AuditTable

logger = Logger(child=True)

GetInvocation = Callable[[str, str], Invocation]


@dataclass(frozen=True)
class AuditResult:
    action: str  # ignored | applied
    reason: str = ""
    applied: list[NodeImageUpdate] = field(default_factory=list)
    stale: int = 0


def is_our_document(document_name: str, ours: str) -> bool:
    # Events name the document; shared documents are named by ARN (…:document/<name>).
    return document_name == ours or document_name.rsplit("/", 1)[-1] == ours


@dataclass(frozen=True)
class Planned:
    """What one status event means: the updates to write (none if ignored)."""

    event: CommandInvocationEvent
    updates: list[NodeImageUpdate]
    command_kind: str = ""
    cluster: str = ""
    ignored: str = ""


def plan_status(
    event: CommandInvocationEvent,
    settings: AuditSettings,
    table: AuditTable,
    get_invocation: GetInvocation | None = None,
) -> Planned:
    """Everything but the writes: the command, the invocation's result, the updates."""
    detail = event.detail
    if not is_our_document(detail.document_name, settings.document_name):
        reason = f"document {detail.document_name} is not ours ({settings.document_name})"
        logger.info("status ignored", extra={"reason": reason, "event_id": event.id})
        return Planned(event=event, updates=[], ignored=reason)

    command = table.get_command(detail.command_id)
    if command is None:
        raise CommandNotFoundError(
            f"command {detail.command_id} is not recorded (yet): the status event is early or the "
            "command was not sent by eks-image-prefetcher"
        )

    invocation = None
    if detail.status in states.TERMINAL_STATUSES:
        invocation = (get_invocation or ssm.get_invocation)(detail.command_id, detail.instance_id)
        if invocation.status not in states.TERMINAL_STATUSES:
            raise TransientError(
                f"invocation {detail.command_id}/{detail.instance_id} is {invocation.status} in the API "
                f"but {detail.status} in the event: not readable yet"
            )

    updates = states.plan(
        status=detail.status,
        observed_at=event.time,
        requested_at=detail.requested_date_time,
        command_id=detail.command_id,
        instance_id=detail.instance_id,
        cluster=command.cluster,
        images=list(command.images),
        invocation=invocation,
    )
    return Planned(event=event, updates=updates, command_kind=command.kind, cluster=command.cluster)


def finish(planned: Planned, written: list[bool], table: AuditTable) -> AuditResult:
    """After the writes: the result, and a joining node that now holds everything is warm."""
    if planned.ignored:
        return AuditResult(action="ignored", reason=planned.ignored)
    updates = planned.updates
    applied = [u for u, ok in zip(updates, written, strict=True) if ok]
    detail = planned.event.detail
    if planned.command_kind == "join" and updates and all(u.state.holds_image for u in updates):
        finished = max(u.finished_at or u.observed_at for u in updates)
        if table.node_warm(planned.cluster, detail.instance_id, finished):
            logger.info("node warm", extra={"instance_id": detail.instance_id, "cluster": planned.cluster})
    logger.debug(
        "status recorded",
        extra={
            "command_id": detail.command_id,
            "instance_id": detail.instance_id,
            "status": detail.status,
            "states": {u.image.pinned: str(u.state) for u in updates},
            "stale": len(updates) - len(applied),
        },
    )
    return AuditResult(action="applied", applied=applied, stale=len(updates) - len(applied))


def handle_status(
    event: CommandInvocationEvent,
    settings: AuditSettings,
    table: AuditTable,
    get_invocation: GetInvocation | None = None,
) -> AuditResult:
    """One status event, written at once (conditional UpdateItem per image)."""
    planned = plan_status(event, settings, table, get_invocation)
    return finish(planned, [table.apply(u) for u in planned.updates], table)


@dataclass
class BatchOutcome:
    """What became of each message of a batch: a result, or the error that makes it retried."""

    results: dict[str, AuditResult] = field(default_factory=dict)
    errors: dict[str, Exception] = field(default_factory=dict)


def _newest_first(event: CommandInvocationEvent) -> tuple[int, datetime]:
    rank = 2 if event.detail.status in states.TERMINAL_STATUSES else 1 if event.detail.status != "Pending" else 0
    return rank, event.time


def handle_batch(
    events: list[tuple[str, CommandInvocationEvent]],
    settings: AuditSettings,
    table: AuditTable,
    *,
    workers: int = 8,
    get_invocation: GetInvocation | None = None,
) -> BatchOutcome:
    """Apply a batch of status events: one update per invocation (the newest status of each
    command and instance in the batch; the older ones could only be stale beside it), the
    invocations read in parallel, then all the writes in batches of 25 conditional statements.
    Every message of an invocation shares its outcome."""
    groups: dict[tuple[str, str], list[tuple[str, CommandInvocationEvent]]] = {}
    for message_id, event in events:
        groups.setdefault((event.detail.command_id, event.detail.instance_id), []).append((message_id, event))
    outcome = BatchOutcome()

    def plan(members: list[tuple[str, CommandInvocationEvent]]) -> Planned | Exception:
        newest = max((event for _, event in members), key=_newest_first)
        try:
            return plan_status(newest, settings, table, get_invocation)
        except Exception as error:  # noqa: BLE001 - reported per message; the queue retries them
            return error

    members = list(groups.values())
    if len(members) <= 1 or workers <= 1:
        planned = [plan(m) for m in members]
    else:
        with ThreadPoolExecutor(max_workers=min(workers, len(members))) as pool:
            planned = list(pool.map(plan, members))

    ready = [(m, p) for m, p in zip(members, planned, strict=True) if isinstance(p, Planned)]
    for group, failure in zip(members, planned, strict=True):
        if isinstance(failure, Exception):
            for message_id, _ in group:
                outcome.errors[message_id] = failure
    try:
        written = table.apply_many([u for _, p in ready for u in p.updates])
    except Exception as error:  # noqa: BLE001 - every message with a write is retried
        for group, p in ready:
            for message_id, _ in group:
                if p.updates:
                    outcome.errors[message_id] = error
        ready = [(g, p) for g, p in ready if not p.updates]
        written = []
    position = 0
    for group, p in ready:
        mine = written[position : position + len(p.updates)]
        position += len(p.updates)
        try:
            result: AuditResult | Exception = finish(p, mine, table)
        except Exception as error:  # noqa: BLE001 - the warm mark failed: the queue retries it
            result = error
        for message_id, _ in group:
            if isinstance(result, Exception):
                outcome.errors[message_id] = result
            else:
                outcome.results[message_id] = result
    return outcome
