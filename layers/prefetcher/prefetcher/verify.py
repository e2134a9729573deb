"""The inventory's send: ask every node of a cluster what it holds (document parameter
`Mode=inventory`), like a push (one SendCommand per cluster target, by tag targets, whatever the
number of nodes), each send exactly once through a send claim (send_once.py), recorded as a
command of kind `inventory` so that the audit path reconciles its results (inventory.py)."""

from __future__ import annotations

import hashlib

from prefetcher import commands, push, send_once, ssm
from prefetcher.eks_tags import CommandTarget, cluster_targets
from prefetcher.inventory import KIND
from prefetcher.refs import ImageRef
from prefetcher.settings import AgentSettings
from prefetcher.store import AuditTable, CommandRecord


def send_inventory(
    table: AuditTable,
    agent: AgentSettings,
    cluster: str,
    *,
    key: str,
    node_groups: tuple[str, ...] = (),
) -> list[str]:
    """Ask every node of `cluster` what it holds: per cluster target (eks_tags.cluster_targets)
    and per cut of the cluster's current images (commands.split_by_repository: a repository's
    images in one command), one SendCommand with
    `Mode=inventory`, exactly once for `key` (a schedule event's id, a `verify` request),
    recorded as a command of kind `inventory`. Returns the command ids (none without current
    images: the document needs at least one)."""
    images = table.catalog.current_images(cluster)
    sent = []
    for target in cluster_targets(cluster, node_groups):
        turns = ssm.rollout_turns(agent.max_concurrency, _nodes(target, agent))
        sent += [
            send_to_target(table, agent, target, chunk, key=key, turns=turns)
            for chunk in commands.split_by_repository(images)
        ]
    return sent


def _nodes(target: CommandTarget, agent: AgentSettings) -> int | None:
    """The nodes a rollout counts (only with a number as MaxConcurrency: push.rollout_turns)."""
    return None if agent.max_concurrency.endswith("%") else push.target_nodes(target)


def send_to_target(
    table: AuditTable, agent: AgentSettings, target: CommandTarget, images: list[ImageRef], *, key: str, turns: int
) -> str:
    label = " AND ".join(f"{name}={'|'.join(values)}" for name, values in target.targets)
    digests = hashlib.sha256(",".join(i.agent_item for i in images).encode()).hexdigest()[:16]
    command_id, requested_at = send_once.send_once(
        table, f"{KIND}#{key}#{label}#{digests}", images, agent, f"inventory of {target.cluster}",
        target=target, turns=turns, mode=ssm.INVENTORY,
    )  # fmt: skip
    table.commands.record(
        CommandRecord(
            command_id=command_id, kind=KIND, cluster=target.cluster, images=tuple(images),
            requested_at=requested_at, event_id=key, target=label,
        )
    )  # fmt: skip
    return command_id
