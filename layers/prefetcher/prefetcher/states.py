"""The per-node, per-image states of the audit table and how SSM's statuses map onto them.

Pure: no AWS calls. The audit function uses it to turn a status event (plus, for a finished
invocation, what GetCommandInvocation returned, read by agent_output.py) into one update per
image (`updates_for_status`); the conditional write in
store/node_images.py enforces the same ordering in
DynamoDB.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime

from prefetcher.agent_output import AgentOutput, read_agent_output, script_reason
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
    # The command ended but the node's output says nothing of this image (cut, or the script
    # stopped before reporting it): not known to be held, not known to have failed; the audit
    # function sends it again (audit.send_again).
    UNKNOWN = "unknown"
    # Recorded cached or present, then found absent by an inventory (the kubelet's image GC, or a
    # hand, removed it); `last_seen_at` says when it was last known present.
    EVICTED = "evicted"
    # The catch-up's retry budget for this image on this node is spent; `reason` is the last one.
    GIVEN_UP = "given-up"

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
        """In the failure views (gsi3, `prefetcher failures`). Not `unknown` (sent again) nor
        `evicted` (the pull worked; the node removed the image since: the catch-up's work)."""
        return self.terminal and not self.holds_image and self not in (NodeState.UNKNOWN, NodeState.EVICTED)


TERMINAL_STATUSES = frozenset({"Success", "Failed", "TimedOut", "Cancelled"})
PROGRESS_STATUSES = frozenset({"InProgress", "Delayed", "Cancelling"})


def version(requested_at: datetime, command_id: str, state: NodeState) -> str:
    """A string that orders every update of one (image, node) record: newer commands first by
    their requested time, then progress within a command. DynamoDB compares strings bytewise, so
    a condition `version < :new` rejects duplicates and late, out-of-order events."""
    stamp = requested_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return f"{stamp}#{command_id}#{state.rank}"


# The state an image's result line (agent_output.ImageResult.outcome) gives it.
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


def invocation_failure(status: str, invocation: Invocation | None, fatal: str = "") -> tuple[NodeState, str]:
    """The state and a readable reason for an image an invocation ended without reporting."""
    details = _normalise(invocation.status_details) if invocation else ""
    code = invocation.response_code if invocation else -1
    if details == "undeliverable":
        return NodeState.UNDELIVERABLE, (
            "undeliverable: SSM could not deliver the command (the node is gone, stopped, or its "
            "SSM agent is not registered)"
        )
    if details == "deliverytimedout":
        return NodeState.UNDELIVERABLE, (
            "delivery timed out: the command expired before this node ran it (the node was offline, "
            "or its turn in the rollout came after the command's TimeoutSeconds)"
        )
    if details == "accessdenied":
        return NodeState.FAILED, (
            "access denied: the stack's IAM policy does not allow SendCommand on this instance (it needs "
            "the tag eks:cluster-name or eks:eks-cluster-name with its cluster's name)"
        )
    if details == "terminated":
        return NodeState.FAILED, (
            "terminated: the rollout stopped after more nodes failed than MaxErrors allows; the command "
            "never ran on this node"
        )
    if details == "invalidplatform":
        return NodeState.FAILED, "invalid platform: the node is not Linux; the document runs only on Linux"
    if details == "executiontimedout" or (status == "TimedOut" and not details):
        return NodeState.TIMED_OUT, (
            "execution timed out: the agent was stopped at ExecutionTimeoutSeconds before this image was done"
        )
    if status == "Cancelled" or details in ("cancelled", "cancelling"):
        return NodeState.FAILED, "cancelled: the command was cancelled before this image was pulled"
    if fatal:
        return NodeState.FAILED, fatal[:1000]
    if invocation is not None and code == -1 and not invocation.stdout and not invocation.stderr:
        return NodeState.FAILED, (
            "the node's SSM agent failed the command before the script ran (a parameter did not pass "
            "its allowedPattern there, or the document could not be read); nothing was pulled"
        )
    reason = f"agent exited with code {code}"
    said = script_reason(invocation.stderr) if invocation else ""
    if said:
        reason += f": {said}"
    return NodeState.FAILED, reason


_ENDED_BY_SSM = frozenset(
    {"undeliverable", "deliverytimedout", "executiontimedout", "accessdenied", "terminated", "invalidplatform"}
)


def _unreported(status: str, invocation: Invocation | None, output: AgentOutput) -> tuple[NodeState, str]:
    """The state of an image the node's output does not report."""
    details = _normalise(invocation.status_details) if invocation else ""
    if details in _ENDED_BY_SSM or status in ("TimedOut", "Cancelled"):
        return invocation_failure(status, invocation, output.fatal)  # SSM says why
    if output.truncated:
        return NodeState.UNKNOWN, (
            "no result line: the node's output was cut at 24,000 characters before this image's line"
        )
    if output.fatal:
        return NodeState.FAILED, output.fatal[:1000]
    if status == "Success":
        return NodeState.UNKNOWN, "no result line, although the node agent exited 0"
    if output.results:
        _, why = invocation_failure(status, invocation)
        return NodeState.UNKNOWN, f"no result line: the node agent stopped before this image ({why})"
    return invocation_failure(status, invocation)


def updates_for_status(
    *,
    status: str,
    observed_at: datetime,
    requested_at: datetime,
    command_id: str,
    instance_id: str,
    cluster: str,
    images: list[ImageRef],
    invocation: Invocation | None = None,
    last_try: bool = False,
) -> list[NodeImageUpdate]:
    """The updates one status event makes: one per image of the command. An image the node did
    not report is `unknown` (and sent again), unless this command was its `last_try`."""
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

    output = read_agent_output(invocation.stdout) if invocation else AgentOutput(results={})
    started = invocation.started_at if invocation else None
    finished = (invocation.finished_at if invocation else None) or observed_at
    updates = []
    for image in images:
        line = output.results.get(image.pinned)
        if line is not None and line.outcome == "absent":
            line = None  # an inventory's word in a pull's output: not a pull's result
        if line is not None:
            state = _OUTCOME[line.outcome]
            reason = line.error[:1000] if state.is_failure else ""
            seconds: float | None = line.seconds
            size: int | None = line.bytes
        else:
            state, reason = _unreported(status, invocation, output)
            if state is NodeState.UNKNOWN and last_try:
                state, reason = NodeState.FAILED, f"{reason}; it was sent again, and again nothing was reported"
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
