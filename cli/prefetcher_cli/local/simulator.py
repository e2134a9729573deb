"""The node simulator: plays the SSM agents of the simulated fleet. It picks up each invocation
of our document that moto holds as Pending, runs the agent (really, against containerd, where a
runner for that is given; otherwise it answers as a successful agent would), records the outcome
where GetCommandInvocation reads it, and emits the status-change events SSM would emit."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from prefetcher.refs import ImageRef

from prefetcher_cli.local import fidelity
from prefetcher_cli.local.fidelity import PendingInvocation


@dataclass(frozen=True)
class AgentRun:
    """What running the document's script on one node gave."""

    response_code: int
    stdout: str
    stderr: str
    started_at: datetime
    finished_at: datetime

    @property
    def status(self) -> str:
        return "Success" if self.response_code == 0 else "Failed"


AgentRunner = Callable[[str, dict[str, str]], AgentRun]


def simulated_agent(sizes: dict[str, int] | None = None) -> AgentRunner:
    """An agent that reports every image as pulled, with the agent's exact result lines, without
    pulling anything (for machines without root or containerd)."""
    sizes = sizes or {}

    def run(instance_id: str, parameters: dict[str, str]) -> AgentRun:
        started = datetime.now(UTC)
        lines = []
        for item in parameters["Images"].split(","):
            image = ImageRef.parse_agent_item(item)
            lines.append(
                json.dumps(
                    {
                        "image": image.pinned,
                        "digest": image.digest,
                        "tag": image.tag,
                        "outcome": "pulled",
                        "bytes": sizes.get(image.repository, 0),
                        "seconds": 0.0,
                        "error": "",
                    },
                    separators=(",", ":"),
                )
            )
        return AgentRun(
            response_code=0,
            stdout="\n".join(lines) + "\n",
            stderr=f"simulated pull on {instance_id}: nothing was pulled (no containerd here)\n",
            started_at=started,
            finished_at=datetime.now(UTC),
        )

    return run


def real_agent(nodes: Any) -> AgentRunner:
    """Run the document's script on a real containerd per simulated node (a LocalNodes)."""

    def run(instance_id: str, parameters: dict[str, str]) -> AgentRun:
        done = nodes.run(instance_id, parameters)
        return AgentRun(done.code, done.stdout, done.stderr, done.started_at, done.finished_at)

    return run


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass
class NodeSimulator:
    put_events: Callable[..., None]
    account: str
    region: str
    document_name: str
    runner: AgentRunner
    emit_pending: bool = False
    handled: list[tuple[str, str, str]] = field(default_factory=list)  # (command, instance, status)

    def _event(self, invocation: PendingInvocation, status: str) -> dict[str, Any]:
        return {
            "source": "aws.ssm",
            "detail-type": "EC2 Command Invocation Status-change Notification",
            "resources": [f"arn:aws:ec2:{self.region}:{self.account}:instance/{invocation.instance_id}"],
            "detail": {
                "command-id": invocation.command_id,
                "document-name": invocation.document_name,
                "instance-id": invocation.instance_id,
                "requested-date-time": _iso(invocation.requested_at),
                "status": status,
            },
        }

    def step(self) -> int:
        """Run every pending invocation of our document once; returns how many ran."""
        count = 0
        for invocation in list(fidelity.pending(self.account, self.region)):
            if invocation.document_name != self.document_name:
                continue
            started = datetime.now(UTC)
            fidelity.set_invocation(
                self.account,
                self.region,
                invocation.command_id,
                invocation.instance_id,
                status="InProgress",
                started_at=started,
            )
            if self.emit_pending:
                self.put_events(self._event(invocation, "Pending"))
            self.put_events(self._event(invocation, "InProgress"))
            run = self.runner(invocation.instance_id, invocation.parameters)
            fidelity.set_invocation(
                self.account,
                self.region,
                invocation.command_id,
                invocation.instance_id,
                status=run.status,
                details=run.status,
                stdout=run.stdout,
                stderr=run.stderr,
                response_code=run.response_code,
                started_at=run.started_at,
                finished_at=run.finished_at,
            )
            self.put_events(self._event(invocation, run.status))
            self.handled.append((invocation.command_id, invocation.instance_id, run.status))
            count += 1
        return count
