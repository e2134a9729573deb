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


def handle_status(
    event: CommandInvocationEvent,
    settings: AuditSettings,
    table: AuditTable,
    get_invocation: GetInvocation = ssm.get_invocation,
) -> AuditResult:
    detail = event.detail
    if not is_our_document(detail.document_name, settings.document_name):
        reason = f"document {detail.document_name} is not ours ({settings.document_name})"
        logger.info("status ignored", extra={"reason": reason, "event_id": event.id})
        return AuditResult(action="ignored", reason=reason)

    command = table.get_command(detail.command_id)
    if command is None:
        raise CommandNotFoundError(
            f"command {detail.command_id} is not recorded (yet): the status event is early or the "
            "command was not sent by eks-image-prefetcher"
        )

    invocation = None
    if detail.status in states.TERMINAL_STATUSES:
        invocation = get_invocation(detail.command_id, detail.instance_id)
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
    applied, stale = [], 0
    for update in updates:
        if table.apply(update):
            applied.append(update)
        else:
            stale += 1
    if command.kind == "join" and updates and all(u.state.holds_image for u in updates):
        # Every image the node was sent when it joined is on it: the node is warm.
        finished = max(u.finished_at or u.observed_at for u in updates)
        if table.node_warm(command.cluster, detail.instance_id, finished):
            logger.info("node warm", extra={"instance_id": detail.instance_id, "cluster": command.cluster})
    logger.info(
        "status recorded",
        extra={
            "command_id": detail.command_id,
            "instance_id": detail.instance_id,
            "status": detail.status,
            "states": {u.image.pinned: str(u.state) for u in updates},
            "stale": stale,
        },
    )
    return AuditResult(action="applied", applied=applied, stale=stale)


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
    get_invocation: GetInvocation = ssm.get_invocation,
) -> BatchOutcome:
    """Apply a batch of status events: one update per invocation (the newest status of each
    command and instance in the batch; the older ones could only be stale beside it), the
    invocations in parallel. Every message of an invocation shares its outcome."""
    groups: dict[tuple[str, str], list[tuple[str, CommandInvocationEvent]]] = {}
    for message_id, event in events:
        groups.setdefault((event.detail.command_id, event.detail.instance_id), []).append((message_id, event))
    outcome = BatchOutcome()

    def apply(members: list[tuple[str, CommandInvocationEvent]]) -> tuple[list[str], AuditResult | Exception]:
        newest = max((event for _, event in members), key=_newest_first)
        try:
            return [m for m, _ in members], handle_status(newest, settings, table, get_invocation)
        except Exception as error:  # noqa: BLE001 - reported per message; the queue retries them
            return [m for m, _ in members], error

    if len(groups) <= 1 or workers <= 1:
        done = [apply(members) for members in groups.values()]
    else:
        with ThreadPoolExecutor(max_workers=min(workers, len(groups))) as pool:
            done = list(pool.map(apply, groups.values()))
    for message_ids, result in done:
        for message_id in message_ids:
            if isinstance(result, Exception):
                outcome.errors[message_id] = result
            else:
                outcome.results[message_id] = result
    return outcome
