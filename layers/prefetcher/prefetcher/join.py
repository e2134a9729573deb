"""The node-join path: an EC2 instance started or stopped. A node of a target cluster that starts
gets every current image of its cluster as soon as its SSM agent can be reached; a node that
stops or terminates leaves coverage."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aws_lambda_powertools import Logger

from prefetcher import clients, sends
from prefetcher.errors import NodeNotReachableError
from prefetcher.events import InstanceStateEvent
from prefetcher.fleet import Membership, membership
from prefetcher.refs import MAX_IMAGES_PER_COMMAND, ImageRef
from prefetcher.settings import JoinSettings
from prefetcher.states import NodeImageUpdate, NodeState
from prefetcher.store import AuditTable, CommandRecord

logger = Logger(child=True)

LEAVING = frozenset({"stopping", "stopped", "shutting-down", "terminated"})
DESCRIBE_FILTER_MAX = 200  # values per DescribeInstances filter


def describe_memberships(instance_ids: Iterable[str]) -> dict[str, Membership | None]:
    """Which cluster each instance belongs to, from its tags: one DescribeInstances call for up
    to 200 instances (a filter, not InstanceIds: an id that no longer exists is not an error)."""
    ids = sorted(set(instance_ids))
    found: dict[str, Membership | None] = dict.fromkeys(ids)
    ec2 = clients.client("ec2")
    for start in range(0, len(ids), DESCRIBE_FILTER_MAX):
        chunk = ids[start : start + DESCRIBE_FILTER_MAX]
        token: str | None = None
        while True:
            answer = ec2.describe_instances(
                Filters=[{"Name": "instance-id", "Values": chunk}],
                MaxResults=1000,
                **({"NextToken": token} if token else {}),
            )
            for reservation in answer.get("Reservations", []):
                for instance in reservation.get("Instances", []):
                    tags = {t["Key"]: t["Value"] for t in instance.get("Tags", [])}
                    found[instance["InstanceId"]] = membership(tags)
            token = answer.get("NextToken")
            if not token:
                break
    return found


@dataclass(frozen=True)
class JoinResult:
    action: str  # ignored | joined | left | stale | undeliverable | sent
    reason: str = ""
    commands: list[str] = field(default_factory=list)
    images: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"action": self.action, "reason": self.reason, "commands": self.commands, "images": self.images}


def targeted(member: Membership | None, settings: JoinSettings) -> str:
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
    """One command per 50 images (usually one), to this node only; each is recorded."""
    sent = []
    for start in range(0, len(images), MAX_IMAGES_PER_COMMAND):
        chunk = images[start : start + MAX_IMAGES_PER_COMMAND]
        digests = hashlib.sha256(",".join(i.agent_item for i in chunk).encode()).hexdigest()[:16]
        command_id, requested_at = sends.send_once(
            table, f"join#{event_id}#{instance_id}#{digests}", chunk, settings.agent,
            f"join {instance_id} ({cluster})", instance_ids=[instance_id],
        )  # fmt: skip
        table.record_command(
            CommandRecord(
                command_id=command_id, kind="join", cluster=cluster, images=tuple(chunk), requested_at=requested_at,
                event_id=event_id, instance_id=instance_id, target=f"InstanceIds={instance_id}",
            )
        )  # fmt: skip
        sent.append(command_id)
    return sent


def handle_state(
    event: InstanceStateEvent,
    settings: JoinSettings,
    table: AuditTable,
    *,
    members: dict[str, Membership | None],
    attempt: int,
    back_off: Callable[[int], None],
    give_up: Callable[[str], None],
) -> JoinResult:
    """Apply one state change. `attempt` is this event's delivery count; `back_off(seconds)`
    makes the queue redeliver it later; `give_up(reason)` keeps it in the dead-letter queue."""
    instance_id, state = event.detail.instance_id, event.detail.state
    member = members.get(instance_id)
    if state in LEAVING:
        cluster = member.cluster if member else table.node_cluster(instance_id)
        if not cluster:
            return JoinResult(action="ignored", reason=f"{instance_id} is not a known node")
        left = table.node_left(cluster, instance_id, event.time, state)
        logger.info(
            "node left", extra={"instance_id": instance_id, "cluster": cluster, "state": state, "applied": left}
        )
        return JoinResult(action="left" if left else "stale", reason="" if left else "the node started again later")
    if state != "running":
        return JoinResult(action="ignored", reason=f"state {state} needs nothing")
    why_not = targeted(member, settings)
    if why_not or member is None:
        logger.info("instance ignored", extra={"instance_id": instance_id, "reason": why_not})
        return JoinResult(action="ignored", reason=why_not)

    if not table.node_joined(member.cluster, instance_id, member.node_group, member.kind, event.time):
        return JoinResult(action="stale", reason="a newer state of this node is recorded")
    images = table.current_images(member.cluster)
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
            record_undeliverable(table, member.cluster, instance_id, images=images, event=event, reason=reason)
            give_up(reason)
            return JoinResult(action="undeliverable", reason=reason, images=len(images))
        delay = settings.retry_delay(attempt)
        logger.info(
            "node not reachable yet; retrying later",
            extra={"instance_id": instance_id, "attempt": attempt, "retry_in_seconds": delay},
        )
        back_off(delay)
        raise
    # A push may have changed the catalog while this node was joining: send what is missing
    # (a push that records its image after this read reaches the node itself, as the node is
    # now registered).
    latest = table.current_images(member.cluster)
    missing = [image for image in latest if image not in images]
    if missing:
        commands += send_images(
            table, settings, cluster=member.cluster, instance_id=instance_id, images=missing, event_id=event.id
        )
    logger.info(
        "node warming", extra={"instance_id": instance_id, "commands": commands, "images": len(images) + len(missing)}
    )
    return JoinResult(action="sent", commands=commands, images=len(images) + len(missing))


def record_undeliverable(
    table: AuditTable, cluster: str, instance_id: str, *, images: list[ImageRef], event: InstanceStateEvent, reason: str
) -> None:
    table.node_undeliverable(cluster, instance_id, reason)
    for image in images:
        table.apply(
            NodeImageUpdate(
                image=image, instance_id=instance_id, cluster=cluster, command_id=f"join-{event.id}",
                requested_at=event.time, state=NodeState.UNDELIVERABLE, observed_at=datetime.now(event.time.tzinfo),
                reason=reason,
            )
        )  # fmt: skip
