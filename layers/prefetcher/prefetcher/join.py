"""The node-join path: an EC2 instance started or stopped. A node of a target cluster that starts
gets every current image of its cluster as soon as its SSM agent can be reached; a node that
stops or terminates leaves coverage. One event's decision; join_batch.py applies a batch."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aws_lambda_powertools import Logger

from prefetcher import send_once
from prefetcher.eks_tags import KARPENTER_CLUSTER_TAG, MANAGED_CLUSTER_TAG, Membership
from prefetcher.errors import NodeNotReachableError, NotPermittedError
from prefetcher.events import InstanceStateEvent
from prefetcher.refs import ImageRef
from prefetcher.settings import JoinSettings
from prefetcher.states import NodeImageUpdate, NodeState
from prefetcher.store import AuditTable

logger = Logger(child=True)

LEAVING = frozenset({"stopping", "stopped", "shutting-down", "terminated"})
QUARANTINED = frozenset({"undeliverable", "not-permitted"})  # kept in the DLQ with the reason


@dataclass(frozen=True)
class JoinResult:
    action: str  # ignored | joined | left | stale | undeliverable | not-permitted | sent | failed
    reason: str = ""
    commands: list[str] = field(default_factory=list)
    images: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"action": self.action, "reason": self.reason, "commands": self.commands, "images": self.images}


def why_not_targeted(member: Membership | None, settings: JoinSettings) -> str:
    """Why a node is not ours ("" if it is)."""
    if member is None:
        return "not a node of an EKS cluster (no kubernetes.io/cluster/<name> tag)"
    if member.cluster not in settings.selection.target_clusters:
        return f"cluster {member.cluster} is not in TargetClusters"
    if settings.selection.target_node_groups and member.node_group not in settings.selection.target_node_groups:
        return f"node group {member.node_group or '(none)'} is not in TargetNodeGroups"
    return ""


def send_images(
    table: AuditTable, settings: JoinSettings, *, cluster: str, instance_id: str, images: list[ImageRef], event_id: str
) -> list[str]:
    """Every image to this node only (usually one command); each command is recorded."""
    return send_once.send_to_node(
        table, settings.agent, key=f"join#{event_id}", kind="join", cluster=cluster, instance_id=instance_id,
        images=images, event_id=event_id, comment=f"join {instance_id} ({cluster})",
    )  # fmt: skip


def handle_state(
    event: InstanceStateEvent,
    settings: JoinSettings,
    table: AuditTable,
    *,
    members: dict[str, Membership | None],
    attempt: int,
    back_off: Callable[[int], None],
    give_up: Callable[[str, str], None],
) -> JoinResult:
    """Apply one state change. `attempt` is this event's delivery count; `back_off(seconds)`
    makes the queue redeliver it later; `give_up(reason, error_type)` keeps it in the
    dead-letter queue (redriven once the cause is fixed)."""
    instance_id, state = event.detail.instance_id, event.detail.state
    member = members.get(instance_id)
    if state in LEAVING:
        cluster = member.cluster if member else table.nodes.cluster_of(instance_id)
        if not cluster:
            return JoinResult(action="ignored", reason=f"{instance_id} is not a known node")
        left = table.nodes.left(cluster, instance_id, event.time, state)
        logger.info(
            "node left", extra={"instance_id": instance_id, "cluster": cluster, "state": state, "applied": left}
        )
        return JoinResult(action="left" if left else "stale", reason="" if left else "the node started again later")
    if state != "running":
        return JoinResult(action="ignored", reason=f"state {state} needs nothing")
    why_not = why_not_targeted(member, settings)
    if why_not or member is None:
        logger.info("instance ignored", extra={"instance_id": instance_id, "reason": why_not})
        return JoinResult(action="ignored", reason=why_not)

    if not table.nodes.joined(member.cluster, instance_id, member.node_group, member.kind, event.time):
        return JoinResult(action="stale", reason="a newer state of this node is recorded")
    images = table.catalog.current_images(member.cluster)
    if not images:
        logger.info("node joined; no current images for its cluster", extra={"instance_id": instance_id})
        return JoinResult(action="joined", reason=f"no current images for cluster {member.cluster}")
    try:
        commands = send_images(
            table, settings, cluster=member.cluster, instance_id=instance_id, images=images, event_id=event.id
        )
    except NodeNotReachableError as error:
        if attempt >= settings.join_max_attempts:
            reason = (
                f"undeliverable: the node's SSM agent did not register within {attempt} tries "
                f"(about {sum(settings.retry_delay(n) for n in range(1, attempt))} s after it started): {error}"
            )
            record_not_warmed(
                table, member.cluster, instance_id, images=images, event=event, reason=reason,
                state=NodeState.UNDELIVERABLE,
            )  # fmt: skip
            give_up(reason, "NodeUndeliverable")
            return JoinResult(action="undeliverable", reason=reason, images=len(images))
        delay = settings.retry_delay(attempt)
        logger.info(
            "node not reachable yet; retrying later",
            extra={"instance_id": instance_id, "attempt": attempt, "retry_in_seconds": delay},
        )
        back_off(delay)
        raise
    except NotPermittedError as error:
        # IAM answers the same on every try: record why at once, keep the event to redrive once
        # the node (or the policy) is fixed.
        reason = not_permitted_reason(member, instance_id, error)
        record_not_warmed(
            table, member.cluster, instance_id, images=images, event=event, reason=reason, state=NodeState.FAILED
        )
        give_up(reason, "NodeNotPermitted")
        logger.warning("node not permitted", extra={"instance_id": instance_id, "reason": reason})
        return JoinResult(action="not-permitted", reason=reason, images=len(images))
    # A push may have changed the catalog while this node was joining: send what is missing
    # (a push that records its image after this read reaches the node itself, as the node is
    # now registered).
    latest = table.catalog.current_images(member.cluster)
    missing = [image for image in latest if image not in images]
    if missing:
        commands += send_images(
            table, settings, cluster=member.cluster, instance_id=instance_id, images=missing, event_id=event.id
        )
    logger.info(
        "node warming", extra={"instance_id": instance_id, "commands": commands, "images": len(images) + len(missing)}
    )
    return JoinResult(action="sent", commands=commands, images=len(images) + len(missing))


def action_metric(action: str) -> str:
    """The metric that counts a join action (`not-permitted` -> NodeEventsNotPermitted)."""
    if action == "rejected":
        return "EventsRejected"
    return "NodeEvents" + "".join(part.capitalize() for part in action.split("-"))


def give_up_on(
    event: InstanceStateEvent,
    table: AuditTable,
    settings: JoinSettings,
    *,
    members: dict[str, Membership | None],
    reason: str,
    give_up: Callable[[str, str], None],
) -> JoinResult:
    """An event that failed on its last receive: the node (if it is one of ours) is recorded
    with the reason, and the event is kept in the dead-letter queue with it."""
    why = f"not applied after {settings.join_max_attempts} receives: {reason}"
    member = members.get(event.detail.instance_id)
    if member is not None and event.detail.state == "running" and not why_not_targeted(member, settings):
        try:
            table.nodes.undeliverable(member.cluster, event.detail.instance_id, why, state=str(NodeState.FAILED))
        except Exception as error:  # noqa: BLE001 - the event still goes to the DLQ with its reason
            logger.warning("could not record the node", extra={"reason": str(error)})
    give_up(why, "NodeEventFailed")
    return JoinResult(action="failed", reason=why)


def not_permitted_reason(member: Membership, instance_id: str, error: Exception) -> str:
    """Why IAM refused SendCommand to a node, in words that say what to change."""
    wanted = f"{MANAGED_CLUSTER_TAG}={member.cluster} (or {KARPENTER_CLUSTER_TAG}={member.cluster})"
    if not member.cluster_tag:
        return (
            f"not permitted: the stack may run its document only on instances tagged {wanted}; {instance_id} "
            f"({member.kind} node of {member.cluster}) has neither tag: add {MANAGED_CLUSTER_TAG}={member.cluster} "
            "to the node (docs/operations.md, Self-managed nodes), then redrive NodeJoinDLQ"
        )
    return (
        f"not permitted: SendCommand to {instance_id} was denied although it carries "
        f"{member.cluster_tag}={member.cluster}: the functions' IAM policy does not match template.yaml ({error})"
    )


def record_not_warmed(
    table: AuditTable,
    cluster: str,
    instance_id: str,
    *,
    images: list[ImageRef],
    event: InstanceStateEvent,
    reason: str,
    state: NodeState,
) -> None:
    """The node and each image it was to get, recorded with why it did not get them."""
    table.nodes.undeliverable(cluster, instance_id, reason, state=str(state))
    for image in images:
        table.node_images.apply(
            NodeImageUpdate(
                image=image, instance_id=instance_id, cluster=cluster, command_id=f"join-{event.id}",
                requested_at=event.time, state=state, observed_at=datetime.now(event.time.tzinfo),
                reason=reason,
            )
        )  # fmt: skip
