"""The per-node, per-image states of the audit table and how SSM's statuses map onto them.

Pure: no AWS calls. The audit function uses it to turn a status event (plus, for a finished
invocation, what GetCommandInvocation returned) into one update per image; the conditional write
in store.py enforces the same ordering in DynamoDB.
"""

from __future__ import annotations

import enum
import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from prefetcher.refs import ImageRef


class NodeState(enum.StrEnum):
    REQUESTED = "requested"
    IN_PROGRESS = "in-progress"
    CACHED = "cached"  # pulled by this command
    PRESENT = "present"  # was already on the node
    FAILED = "failed"
    TIMED_OUT = "timed-out"
    UNDELIVERABLE = "undeliverable"
    SKIPPED_DISK = "skipped-disk"

    @property
    def rank(self) -> int:
        """Progress within one command: a state may only replace one of lower rank."""
        return {NodeState.REQUESTED: 0, NodeState.IN_PROGRESS: 1}.get(self, 2)

    @property
    def terminal(self) -> bool:
        return self.rank == 2

    @property
    def holds_image(self) -> bool:
        return self in (NodeState.CACHED, NodeState.PRESENT)

    @property
    def is_failure(self) -> bool:
        return self.terminal and not self.holds_image


TERMINAL_STATUSES = frozenset({"Success", "Failed", "TimedOut", "Cancelled"})
PROGRESS_STATUSES = frozenset({"InProgress", "Delayed", "Cancelling"})


def version(requested_at: datetime, command_id: str, state: NodeState) -> str:
    """A string that orders every update of one (image, node) record: newer commands first by
    their requested time, then progress within a command. DynamoDB compares strings bytewise, so
    a condition `version < :new` rejects duplicates and late, out-of-order events."""
    stamp = requested_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return f"{stamp}#{command_id}#{state.rank}"


# ---- what the node agent prints ------------------------------------------------------------


class AgentResult(BaseModel):
    """One result line of the node agent (see agent/prefetch.sh: the result contract)."""

    model_config = ConfigDict(extra="ignore", frozen=True, defer_build=True)

    image: str = Field(max_length=600)
    digest: str = Field(max_length=80)
    tag: str = Field("", max_length=200)
    outcome: str = Field(pattern=r"^(pulled|present|skipped-disk|failed)$")
    bytes: int = Field(0, ge=0)
    seconds: float = Field(0.0, ge=0)
    error: str = Field("", max_length=4000)


def parse_agent_output(stdout: str) -> dict[str, AgentResult]:
    """The agent's result lines, by pinned image reference. Other output is ignored."""
    results: dict[str, AgentResult] = {}
    for raw in stdout.splitlines():
        line = raw.strip()
        if not (line.startswith("{") and '"outcome"' in line):
            continue
        try:
            result = AgentResult.model_validate(json.loads(line))
        except (ValueError, ValidationError):
            continue
        results[result.image] = result
    return results


_OUTCOME = {
    "pulled": NodeState.CACHED,
    "present": NodeState.PRESENT,
    "skipped-disk": NodeState.SKIPPED_DISK,
    "failed": NodeState.FAILED,
}


# ---- what GetCommandInvocation says about a finished invocation -----------------------------


@dataclass(frozen=True)
class Invocation:
    status: str
    status_details: str = ""
    response_code: int = -1
    stdout: str = ""
    stderr: str = ""
    started_at: datetime | None = None
    finished_at: datetime | None = None


@dataclass(frozen=True)
class NodeImageUpdate:
    """One conditional write to the audit table: the state of `image` on `instance_id`."""

    image: ImageRef
    instance_id: str
    cluster: str
    command_id: str
    requested_at: datetime
    state: NodeState
    observed_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    seconds: float | None = None
    bytes: int | None = None
    reason: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def version(self) -> str:
        return version(self.requested_at, self.command_id, self.state)


def _normalise(details: str) -> str:
    # StatusDetails comes as human text ("Delivery Timed Out"); list filters use CamelCase.
    return "".join(details.split()).lower()


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:500] if lines else ""


def invocation_failure(status: str, invocation: Invocation | None) -> tuple[NodeState, str]:
    """The state and a readable reason for an invocation that ended without a result line."""
    details = _normalise(invocation.status_details) if invocation else ""
    stderr = _last_line(invocation.stderr) if invocation else ""
    code = invocation.response_code if invocation else -1
    if details == "undeliverable":
        return NodeState.UNDELIVERABLE, (
            "undeliverable: SSM could not deliver the command (the node is gone, stopped, or its "
            "SSM agent is not registered)"
        )
    if details == "deliverytimedout":
        return NodeState.UNDELIVERABLE, (
            "delivery timed out: the node did not pick up the command within DeliveryTimeoutSeconds "
            "(offline, or SSM agent not running)"
        )
    if details == "executiontimedout" or (status == "TimedOut" and not details):
        return NodeState.TIMED_OUT, "execution timed out: the agent ran longer than ExecutionTimeoutSeconds"
    if status == "Cancelled" or details in ("cancelled", "cancelling"):
        return NodeState.FAILED, "cancelled: the command was cancelled before this image was pulled"
    if details == "terminated":
        return NodeState.FAILED, "terminated: the node stopped or was terminated during the pull"
    if details == "accessdenied":
        return NodeState.FAILED, "access denied: the SSM agent was not allowed to run the command"
    if details == "invalidplatform":
        return NodeState.FAILED, "invalid platform: the node is not Linux; the document runs only on Linux"
    reason = f"agent exited with code {code}"
    if stderr:
        reason += f": {stderr}"
    return NodeState.FAILED, reason


def plan(
    *,
    status: str,
    observed_at: datetime,
    requested_at: datetime,
    command_id: str,
    instance_id: str,
    cluster: str,
    images: list[ImageRef],
    invocation: Invocation | None = None,
) -> list[NodeImageUpdate]:
    """The updates one status event makes: one per image of the command."""
    base = {
        "instance_id": instance_id,
        "cluster": cluster,
        "command_id": command_id,
        "requested_at": requested_at,
        "observed_at": observed_at,
    }
    if status == "Pending":
        return [NodeImageUpdate(image=image, state=NodeState.REQUESTED, **base) for image in images]  # type: ignore[arg-type]
    if status in PROGRESS_STATUSES:
        reason = "delivery delayed: SSM retries delivering to the node" if status == "Delayed" else ""
        return [
            NodeImageUpdate(image=image, state=NodeState.IN_PROGRESS, started_at=observed_at, reason=reason, **base)  # type: ignore[arg-type]
            for image in images
        ]
    if status not in TERMINAL_STATUSES:
        raise ValueError(f"unknown invocation status {status!r}")

    results = parse_agent_output(invocation.stdout) if invocation else {}
    started = invocation.started_at if invocation else None
    finished = (invocation.finished_at if invocation else None) or observed_at
    updates = []
    for image in images:
        line = results.get(image.pinned)
        if line is not None:
            state = _OUTCOME[line.outcome]
            reason = line.error[:1000] if state.is_failure else ""
            seconds: float | None = line.seconds
            size: int | None = line.bytes
        elif status == "Success":
            # The agent exits 0 only when every image is pulled or present; a missing line means
            # the output was cut (GetCommandInvocation keeps the first 24,000 characters).
            state, reason, seconds, size = NodeState.CACHED, "", None, None
        else:
            state, reason = invocation_failure(status, invocation)
            seconds, size = None, None
        if seconds is None and started is not None:
            seconds = max(0.0, (finished - started).total_seconds())
        updates.append(
            NodeImageUpdate(
                image=image,
                state=state,
                started_at=started,
                finished_at=finished,
                seconds=None if seconds is None or math.isnan(seconds) else round(seconds, 3),
                bytes=size,
                reason=reason,
                **base,  # type: ignore[arg-type]
            )
        )
    return updates
