"""The push path: an ECR image was pushed; record it and make the target clusters pull it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.idempotency import (
    BasePersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from pydantic import BaseModel

from prefetcher import ssm
from prefetcher.events import EcrImageActionEvent
from prefetcher.fleet import CommandTarget, cluster_targets
from prefetcher.refs import ImageRef
from prefetcher.rules import Ignore, PushRules
from prefetcher.settings import ImagePushSettings
from prefetcher.store import AuditTable, CommandRecord

logger = Logger(child=True)


@dataclass(frozen=True)
class SentCommand:
    cluster: str
    command_id: str
    target: str


@dataclass(frozen=True)
class PushResult:
    action: str  # ignored | superseded | sent
    reason: str = ""
    image: str = ""
    commands: list[SentCommand] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "action": self.action,
            "reason": self.reason,
            "image": self.image,
            "commands": [c.__dict__ for c in self.commands],
        }


Dispatch = Callable[[ImageRef, CommandTarget, ImagePushSettings, AuditTable, str], SentCommand]


def rules_of(settings: ImagePushSettings) -> PushRules:
    return PushRules(
        repository_patterns=settings.repository_patterns,
        tag_patterns=settings.tag_patterns,
        clusters=settings.selection.target_clusters,
    )


def target_label(target: CommandTarget) -> str:
    return " AND ".join(f"{key}={'|'.join(values)}" for key, values in target.targets)


def dispatch_to_target(
    image: ImageRef, target: CommandTarget, settings: ImagePushSettings, table: AuditTable, event_id: str
) -> SentCommand:
    """Send the pull for one cluster target and record the command (one SendCommand, one
    PutItem, whatever the number of nodes)."""
    comment = f"eks-image-prefetcher push {image.repository}:{image.tag} to {target.cluster}"
    command_id, requested_at = ssm.send_pull([image], settings.agent, comment, target=target)
    label = target_label(target)
    table.record_command(
        CommandRecord(
            command_id=command_id,
            kind="push",
            cluster=target.cluster,
            images=(image,),
            requested_at=requested_at,
            event_id=event_id,
            target=label,
        )
    )
    logger.info(
        "pull sent",
        extra={"cluster": target.cluster, "command_id": command_id, "image": image.pinned, "target": label},
    )
    return SentCommand(cluster=target.cluster, command_id=command_id, target=label)


def handle_push(
    event: EcrImageActionEvent,
    settings: ImagePushSettings,
    table: AuditTable,
    dispatch: Dispatch | None = None,
) -> PushResult:
    """Decide, record the catalog, then send one command per target cluster.

    `dispatch` sends one cluster's command; the handler passes an idempotent wrapper of
    `dispatch_to_target`, so a retried event never sends a cluster's command twice."""
    decision = rules_of(settings).decide(event.detail)
    if isinstance(decision, Ignore):
        logger.info("push ignored", extra={"reason": decision.reason, "event_id": event.id})
        return PushResult(action="ignored", reason=decision.reason)

    image = event.image
    outcome = table.record_push(
        image,
        decision.clusters,
        pushed_at=event.time,
        event_id=event.id,
        media_type=event.detail.manifest_media_type or "",
    )
    if not outcome.current:
        reason = f"a newer push of {image.repository}:{image.tag} ({outcome.newer_digest}) is already current"
        logger.info("push superseded before dispatch", extra={"reason": reason, "image": image.pinned})
        return PushResult(action="superseded", reason=reason, image=image.pinned)
    if outcome.previous_digest:
        logger.info("tag moved", extra={"image": image.pinned, "superseded": outcome.previous_digest})

    send = dispatch or dispatch_to_target
    sent = []
    for cluster in decision.clusters:
        for target in cluster_targets(cluster, settings.selection.target_node_groups):
            sent.append(send(image, target, settings, table, event.id))
    return PushResult(action="sent", image=image.pinned, commands=sent)


class DispatchRequest(BaseModel):
    """What identifies one cluster's send of one push: hashed for idempotency."""

    event_id: str
    cluster: str
    targets: list[tuple[str, list[str]]]
    image: str


def idempotent_dispatch(
    settings: ImagePushSettings,
    table: AuditTable,
    persistence: BasePersistenceLayer,
    config: IdempotencyConfig,
) -> Dispatch:
    """A dispatch that sends each (event, cluster target) at most once: a retry of a push that
    failed half-way only sends to the clusters it had not reached."""

    @idempotent_function(  # type: ignore[untyped-decorator]
        data_keyword_argument="request", persistence_store=persistence, config=config
    )
    def send_once(request: DispatchRequest) -> dict[str, str]:
        target = CommandTarget(
            cluster=request.cluster, targets=tuple((key, tuple(values)) for key, values in request.targets)
        )
        sent = dispatch_to_target(ImageRef.parse_agent_item(request.image), target, settings, table, request.event_id)
        return {"cluster": sent.cluster, "command_id": sent.command_id, "target": sent.target}

    def dispatch(
        image: ImageRef,
        target: CommandTarget,
        _settings: ImagePushSettings,
        _table: AuditTable,
        event_id: str,
    ) -> SentCommand:
        request = DispatchRequest(
            event_id=event_id,
            cluster=target.cluster,
            targets=[(key, list(values)) for key, values in target.targets],
            image=image.agent_item,
        )
        sent: dict[str, str] = send_once(request=request)
        return SentCommand(**sent)

    return dispatch
