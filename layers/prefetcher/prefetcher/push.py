"""The push path: an ECR image was pushed; record it and make the target clusters pull it."""

from __future__ import annotations

from dataclasses import dataclass, field

from aws_lambda_powertools import Logger

from prefetcher import clients, send_once, ssm
from prefetcher.eks_tags import CommandTarget, cluster_targets
from prefetcher.events import EcrImageActionEvent
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


def rules_of(settings: ImagePushSettings) -> PushRules:
    return PushRules(
        repository_patterns=settings.repository_patterns,
        tag_patterns=settings.tag_patterns,
        clusters=settings.selection.target_clusters,
    )


def target_label(target: CommandTarget) -> str:
    return " AND ".join(f"{key}={'|'.join(values)}" for key, values in target.targets)


def target_nodes(target: CommandTarget) -> int:
    """How many running instances a tag target reaches now (DescribeInstances with the same tag
    filters SSM resolves; one call per 1,000 instances)."""
    filters = [{"Name": key, "Values": list(values)} for key, values in target.targets]
    filters.append({"Name": "instance-state-name", "Values": ["running"]})
    pages = (
        clients.client("ec2")
        .get_paginator("describe_instances")
        .paginate(Filters=filters, PaginationConfig={"PageSize": 1000})
    )
    return sum(len(reservation.get("Instances", [])) for page in pages for reservation in page.get("Reservations", []))


def rollout_turns(target: CommandTarget, settings: ImagePushSettings) -> int:
    """The turns of a rollout to `target` (ssm.command_timeout sizes the command's lifetime with
    them): a percentage MaxConcurrency bounds them whatever the fleet; with a number, the nodes
    are counted."""
    concurrency = settings.agent.max_concurrency
    nodes = None if concurrency.endswith("%") else target_nodes(target)
    return ssm.rollout_turns(concurrency, nodes)


def dispatch_to_target(
    image: ImageRef, target: CommandTarget, settings: ImagePushSettings, table: AuditTable, event_id: str
) -> SentCommand:
    """Send the pull for one cluster target and record the command (one SendCommand, one
    PutItem, whatever the number of nodes)."""
    label = target_label(target)
    comment = f"push {image.repository}:{image.tag} to {target.cluster}"
    command_id, requested_at = send_once.send_once(
        table, f"push#{event_id}#{label}", [image], settings.agent, comment, target=target,
        turns=rollout_turns(target, settings),
    )  # fmt: skip
    table.commands.record(
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
) -> PushResult:
    """Decide, record the catalog, then send one command per target cluster. Each cluster's send
    happens exactly once (`send_once.send_once`), so a retry after a partial failure only sends to the
    clusters not reached yet."""
    decision = rules_of(settings).decide(event.detail)
    if isinstance(decision, Ignore):
        logger.info("push ignored", extra={"reason": decision.reason, "event_id": event.id})
        return PushResult(action="ignored", reason=decision.reason)

    image = event.image
    outcome = table.catalog.record_push(
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

    sent = [
        dispatch_to_target(image, target, settings, table, event.id)
        for cluster in decision.clusters
        for target in cluster_targets(cluster, settings.selection.target_node_groups)
    ]
    return PushResult(action="sent", image=image.pinned, commands=sent)
