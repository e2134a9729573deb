"""Each pull command is sent exactly once, across retries, duplicate events and crashes.

SSM's SendCommand has no idempotency token, and its answer can be lost after SSM acted on it (a
read timeout, a 5xx, the function timing out). So before the first try the send is *claimed*
in the audit table (a conditional put); after it, the command id is stored with the claim. A
later try that finds a claim with a command id sends nothing; one that finds a claim without it
(an earlier try died between the two) first looks for the command in SSM by the marker that every
command carries in its Comment, and sends only if SSM has none. The same lookup runs before a
retry of an ambiguous failure (timeouts, 5xx, connection errors); botocore's own retries are off
for SendCommand for that reason (`ssm.send_pull`).
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

from prefetcher import commands, ssm
from prefetcher.eks_tags import CommandTarget
from prefetcher.refs import ImageRef
from prefetcher.settings import AgentSettings
from prefetcher.store import AuditTable, CommandRecord

LOOKBACK = timedelta(minutes=10)


def marker(key: str) -> str:
    """A short, unique, shell-safe tag for the Comment (at most 100 characters in all)."""
    return "pf-" + hashlib.sha256(key.encode()).hexdigest()[:20]


def send_once(
    table: AuditTable,
    key: str,
    images: list[ImageRef],
    agent: AgentSettings,
    comment: str,
    *,
    target: CommandTarget | None = None,
    instance_ids: list[str] | None = None,
    turns: int = 1,
    mode: str = ssm.PULL,
) -> tuple[str, datetime]:
    """The command id and requested time of the one command for `key`, sending it if needed
    (for a rollout of `turns`: ssm.command_timeout)."""
    now = datetime.now(UTC)
    claim = table.commands.claim_send(key, now)
    if claim is not None and claim.sent is not None:
        return claim.sent
    tag = marker(key)
    if claim is not None:
        found = ssm.find_command(agent.document_name, tag, since=claim.claimed_at - LOOKBACK)
        if found is not None:
            table.commands.complete_send(key, *found)
            return found
    command_id, requested_at = ssm.send_pull(
        images, agent, f"{tag} {comment}", target=target, instance_ids=instance_ids, marker=tag, turns=turns, mode=mode
    )
    table.commands.complete_send(key, command_id, requested_at)
    return command_id, requested_at


def send_to_node(
    table: AuditTable,
    agent: AgentSettings,
    *,
    key: str,
    kind: str,
    cluster: str,
    instance_id: str,
    images: list[ImageRef],
    event_id: str,
    comment: str,
    attempt: int = 1,
) -> list[str]:
    """Images to one node (by InstanceIds), in as few commands as its output allows
    (commands.split), each sent exactly once and recorded for the audit path. `key` names the
    occasion (a join event, a command whose images are sent again); returns the command ids."""
    sent = []
    for chunk in commands.split(images):
        digests = hashlib.sha256(",".join(i.agent_item for i in chunk).encode()).hexdigest()[:16]
        command_id, requested_at = send_once(
            table, f"{key}#{instance_id}#{digests}", chunk, agent, comment, instance_ids=[instance_id]
        )
        table.commands.record(
            CommandRecord(
                command_id=command_id, kind=kind, cluster=cluster, images=tuple(chunk), requested_at=requested_at,
                event_id=event_id, instance_id=instance_id, target=f"InstanceIds={instance_id}", attempt=attempt,
            )
        )  # fmt: skip
        sent.append(command_id)
    return sent
