"""The audit path: an SSM invocation of our document changed status; record what it means for
each image on that node."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools import Logger

from prefetcher import inventory, send_once, ssm, states
from prefetcher.errors import CommandNotFoundError, NodeNotReachableError, NotPermittedError, TransientError
from prefetcher.events import CommandInvocationEvent
from prefetcher.inventory import Reconcile, Verification
from prefetcher.refs import ImageRef
from prefetcher.settings import AuditSettings
from prefetcher.states import Invocation, NodeImageUpdate, NodeState
from prefetcher.store import AuditTable, CommandRecord

logger = Logger(child=True)

GetInvocation = Callable[[str, str], Invocation]
# An image a node did not report is sent again; after this many commands in all it is failed.
MAX_ATTEMPTS = 3


@dataclass(frozen=True)
class AuditResult:
    action: str  # ignored | applied
    reason: str = ""
    applied: list[NodeImageUpdate] = field(default_factory=list)
    stale: int = 0
    sent_again: list[str] = field(default_factory=list)  # commands sending unreported images again
    verified: list[tuple[Verification, Reconcile]] = field(default_factory=list)  # an inventory's, as written


def is_our_document(document_name: str, ours: str) -> bool:
    # Events name the document; shared documents are named by ARN (…:document/<name>).
    return document_name == ours or document_name.rsplit("/", 1)[-1] == ours


@dataclass(frozen=True)
class StatusWrites:
    """What one status event means: the updates to write (none if ignored), or, for an
    inventory's end, what it found (`verifications`)."""

    event: CommandInvocationEvent
    updates: list[NodeImageUpdate]
    command: CommandRecord | None = None
    ignored: str = ""
    verifications: list[Verification] = field(default_factory=list)

    @property
    def cluster(self) -> str:
        return self.command.cluster if self.command else ""


def writes_for_status(
    event: CommandInvocationEvent,
    settings: AuditSettings,
    table: AuditTable,
    get_invocation: GetInvocation | None = None,
) -> StatusWrites:
    """Everything but the writes: the command, the invocation's result, the updates."""
    detail = event.detail
    if not is_our_document(detail.document_name, settings.document_name):
        reason = f"document {detail.document_name} is not ours ({settings.document_name})"
        logger.info("status ignored", extra={"reason": reason, "event_id": event.id})
        return StatusWrites(event=event, updates=[], ignored=reason)

    command = table.commands.get(detail.command_id)
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

    if command.kind == inventory.KIND:  # no per-image progress: only what the node found, at the end
        found = inventory.verifications_for_status(
            command_id=command.command_id, requested_at=detail.requested_date_time, cluster=command.cluster,
            instance_id=detail.instance_id, observed_at=event.time, invocation=invocation,
        )  # fmt: skip
        return StatusWrites(event=event, updates=[], command=command, verifications=found)
    updates = states.updates_for_status(
        status=detail.status,
        observed_at=event.time,
        requested_at=detail.requested_date_time,
        command_id=detail.command_id,
        instance_id=detail.instance_id,
        cluster=command.cluster,
        images=list(command.images),
        invocation=invocation,
        last_try=command.attempt >= MAX_ATTEMPTS,
    )
    return StatusWrites(event=event, updates=updates, command=command)


def send_again(writes: StatusWrites, images: list[ImageRef], settings: AuditSettings, table: AuditTable) -> list[str]:
    """Send the images a node did not report to that node again (once per command and node,
    however often the status event comes). If SSM cannot reach the node any more, or may not
    send to it, that is recorded instead."""
    command = writes.command
    if command is None:
        raise ValueError("only the images of a recorded command can be sent again")
    instance_id = writes.event.detail.instance_id
    sent: list[str] = []
    try:
        sent = send_once.send_to_node(
            table, settings.agent, key=f"again#{command.command_id}", kind="again", cluster=command.cluster,
            instance_id=instance_id, images=images, event_id=command.event_id,
            comment=f"again {instance_id} ({command.cluster}), try {command.attempt + 1}", attempt=command.attempt + 1,
        )  # fmt: skip
    except (NodeNotReachableError, NotPermittedError) as error:
        state = NodeState.UNDELIVERABLE if isinstance(error, NodeNotReachableError) else NodeState.FAILED
        now = datetime.now(UTC)
        for image in images:
            table.node_images.apply(
                NodeImageUpdate(
                    image=image, instance_id=instance_id, cluster=command.cluster,
                    command_id=f"again-{command.command_id}", requested_at=now, state=state, observed_at=now,
                    reason=f"not reported, and could not be sent again: {error}",
                )
            )  # fmt: skip
    if sent:
        logger.info("unreported images sent again", extra={"instance_id": instance_id, "commands": sent})
    return sent


def finish(
    writes: StatusWrites,
    written: list[bool],
    table: AuditTable,
    settings: AuditSettings,
    verified: list[Reconcile] | None = None,
) -> AuditResult:
    """After the writes: the result, images the node did not report sent again, and a joining
    node that now holds everything is warm. (An inventory's result is its verifications.)"""
    if writes.ignored:
        return AuditResult(action="ignored", reason=writes.ignored)
    if writes.verifications:
        return AuditResult(action="applied", verified=list(zip(writes.verifications, verified or [], strict=True)))
    updates = writes.updates
    applied = [u for u, ok in zip(updates, written, strict=True) if ok]
    detail = writes.event.detail
    unreported = [u.image for u in updates if u.state is NodeState.UNKNOWN]
    sent_again = send_again(writes, unreported, settings, table) if unreported else []
    if writes.command and writes.command.kind == "join" and updates and all(u.state.holds_image for u in updates):
        finished = max(u.finished_at or u.observed_at for u in updates)
        if table.nodes.warm(writes.cluster, detail.instance_id, finished):
            logger.info("node warm", extra={"instance_id": detail.instance_id, "cluster": writes.cluster})
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
    return AuditResult(action="applied", applied=applied, stale=len(updates) - len(applied), sent_again=sent_again)


def handle_status(
    event: CommandInvocationEvent,
    settings: AuditSettings,
    table: AuditTable,
    get_invocation: GetInvocation | None = None,
) -> AuditResult:
    """One status event, written at once (conditional UpdateItem per image)."""
    writes = writes_for_status(event, settings, table, get_invocation)
    verified = table.node_images.verify_many(writes.verifications)
    return finish(writes, [table.node_images.apply(u) for u in writes.updates], table, settings, verified)


@dataclass
class BatchOutcome:
    """What became of each message of a batch: a result, or the error that makes it retried."""

    results: dict[str, AuditResult] = field(default_factory=dict)
    errors: dict[str, Exception] = field(default_factory=dict)


def _newest_first(event: CommandInvocationEvent) -> tuple[int, datetime]:
    rank = 2 if event.detail.status in states.TERMINAL_STATUSES else 1 if event.detail.status != "Pending" else 0
    return rank, event.time


def _in_parallel(work: Callable[[Any], Any], items: list[Any], workers: int) -> list[Any]:
    if len(items) <= 1 or workers <= 1:
        return [work(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(workers, len(items))) as pool:
        return list(pool.map(work, items))


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
    invocations read in parallel, then all the writes in batches of 25 conditional statements,
    then what follows each (sending unreported images again, a node's warm mark) in parallel.
    Every message of an invocation shares its outcome."""
    groups: dict[tuple[str, str], list[tuple[str, CommandInvocationEvent]]] = {}
    for message_id, event in events:
        groups.setdefault((event.detail.command_id, event.detail.instance_id), []).append((message_id, event))
    outcome = BatchOutcome()

    def writes_for_newest(members: list[tuple[str, CommandInvocationEvent]]) -> StatusWrites | Exception:
        newest = max((event for _, event in members), key=_newest_first)
        try:
            return writes_for_status(newest, settings, table, get_invocation)
        except Exception as error:  # noqa: BLE001 - reported per message; the queue retries them
            return error

    members = list(groups.values())
    writes = _in_parallel(writes_for_newest, members, workers)

    ready = [(m, w) for m, w in zip(members, writes, strict=True) if isinstance(w, StatusWrites)]
    for group, failure in zip(members, writes, strict=True):
        if isinstance(failure, Exception):
            for message_id, _ in group:
                outcome.errors[message_id] = failure
    try:
        written = table.node_images.apply_many([u for _, p in ready for u in p.updates])
        verified = table.node_images.verify_many([v for _, p in ready for v in p.verifications])
    except Exception as error:  # noqa: BLE001 - every message with a write is retried
        for group, p in ready:
            for message_id, _ in group:
                if p.updates or p.verifications:
                    outcome.errors[message_id] = error
        ready = [(g, p) for g, p in ready if not p.updates and not p.verifications]
        written, verified = [], []
    slices = []
    position = checked = 0
    for _, p in ready:
        slices.append(
            (p, written[position : position + len(p.updates)], verified[checked : checked + len(p.verifications)])
        )
        position += len(p.updates)
        checked += len(p.verifications)

    def follow_up(writes_and_written: tuple[StatusWrites, list[bool], list[Reconcile]]) -> AuditResult | Exception:
        try:
            return finish(*writes_and_written[:2], table, settings, writes_and_written[2])
        except Exception as error:  # noqa: BLE001 - a send again or the warm mark failed: the queue retries it
            return error

    for (group, _), result in zip(ready, _in_parallel(follow_up, slices, workers), strict=True):
        for message_id, _ in group:
            if isinstance(result, Exception):
                outcome.errors[message_id] = result
            else:
                outcome.results[message_id] = result
    return outcome
