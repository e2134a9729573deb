"""The node simulator: plays the SSM agents of the simulated fleet. It picks up each invocation
of our document that moto holds as Pending and that the rollout lets start (moto_patches.py: the
service's side), checks the parameters as the agent does and runs the step (really, against
containerd, where a runner for that is given; otherwise it answers as a successful agent would),
applies the agent's output rules (ssm_agent.py), records the outcome where GetCommandInvocation
reads it, and emits the status-change events SSM would emit, also for the invocations the
service ended on its own (access denied, delivery timed out, terminated); and, once per command,
the command's own status-change event when its last invocation ends."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from prefetcher.refs import ImageRef
from prefetcher.timestamps import iso

from devtools.local_stack import moto_patches, ssm_agent
from devtools.local_stack.ssm_agent import Report

AgentRunner = Callable[[str, dict[str, str]], Report]


def simulated_agent(sizes: dict[str, int] | None = None, seconds: float = 0.0) -> AgentRunner:
    """An agent that reports every image as pulled, with the agent's exact result lines, without
    pulling anything (for machines without root or containerd). Each run takes `seconds` of the
    rollout's simulated time."""
    sizes = sizes or {}

    def run(instance_id: str, parameters: dict[str, str]) -> Report:
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
                        "seconds": seconds,
                        "error": "",
                    },
                    separators=(",", ":"),
                )
            )
        done = ssm_agent.ScriptExit(
            code=0,
            stdout="\n".join(lines) + "\n",
            stderr=f"simulated pull on {instance_id}: nothing was pulled (no containerd here)\n",
            started_at=started,
            finished_at=datetime.now(UTC),
        )
        return ssm_agent.report(done, simulated_seconds=seconds)

    return run


def _line(image: ImageRef, outcome: str, size: int, seconds: float, pinned: bool) -> str:
    return json.dumps(
        {"image": image.pinned, "digest": image.digest, "tag": image.tag, "outcome": outcome, "bytes": size,
         "seconds": seconds, "error": "", "pinned": pinned},
        separators=(",", ":"),
    )  # fmt: skip


@dataclass
class SimulatedNodes:
    """Simulated agents that remember what each node holds, so that they can answer an
    inventory (document parameter `Mode=inventory`, the agent's contract): a pull puts the image
    on the node (and pins it); an inventory reports every image it was given and every image it
    pulled, `present` or `absent`, then the disk line. `evict` removes an image behind the
    agent's back (as the kubelet's image GC would); `place` puts one there without a pull."""

    sizes: dict[str, int] = field(default_factory=dict)
    free_bytes: int = 40 << 30
    total_bytes: int = 80 << 30
    held: dict[str, dict[str, ImageRef]] = field(default_factory=dict)  # instance -> pinned -> image
    pulled: dict[str, dict[str, ImageRef]] = field(default_factory=dict)  # what the tool pulled there
    inventories: list[tuple[str, dict[str, str]]] = field(default_factory=list)  # (instance, parameters)

    def evict(self, instance_id: str, image: ImageRef) -> None:
        self.held.get(instance_id, {}).pop(image.pinned, None)

    def place(self, instance_id: str, image: ImageRef) -> None:
        self.held.setdefault(instance_id, {})[image.pinned] = image

    def __call__(self, instance_id: str, parameters: dict[str, str]) -> Report:
        started = datetime.now(UTC)
        given = [ImageRef.parse_agent_item(item) for item in parameters["Images"].split(",")]
        held = self.held.setdefault(instance_id, {})
        pulled = self.pulled.setdefault(instance_id, {})
        lines = []
        if parameters.get("Mode", "pull") == "inventory":
            self.inventories.append((instance_id, dict(parameters)))
            known = {image.pinned: image for image in [*pulled.values(), *given]}
            for pinned, image in sorted(known.items()):
                there = pinned in held
                size = self.sizes.get(image.repository, 0) if there else 0
                lines.append(_line(image, "present" if there else "absent", size, 0, there and pinned in pulled))
            disk = {"path": "/var/lib/containerd", "free_bytes": self.free_bytes, "total_bytes": self.total_bytes}
            lines.append(json.dumps({"disk": disk}, separators=(",", ":")))
        else:
            for image in given:
                outcome = "present" if image.pinned in held else "pulled"
                held[image.pinned] = pulled[image.pinned] = image
                lines.append(_line(image, outcome, self.sizes.get(image.repository, 0), 0.0, True))
        done = ssm_agent.ScriptExit(0, "\n".join(lines) + "\n", "", started, datetime.now(UTC))
        return ssm_agent.report(done)


def real_agent(nodes: Any) -> AgentRunner:
    """Run the document's script on a real containerd per simulated node (a LocalNodes)."""

    def run(instance_id: str, parameters: dict[str, str]) -> Report:
        report: Report = nodes.run(instance_id, parameters)
        return report

    return run


@dataclass
class NodeSimulator:
    put_events: Callable[..., None]
    account: str
    region: str
    document_name: str
    runner: AgentRunner
    emit_pending: bool = False
    handled: list[tuple[str, str, str]] = field(default_factory=list)  # (command, instance, status)
    command_events: list[dict[str, Any]] = field(default_factory=list)  # command status events emitted

    def _event(
        self, command_id: str, instance_id: str, document: str, requested: datetime, status: str
    ) -> dict[str, Any]:
        return {
            "source": "aws.ssm",
            "detail-type": "EC2 Command Invocation Status-change Notification",
            "resources": [f"arn:aws:ec2:{self.region}:{self.account}:instance/{instance_id}"],
            "detail": {
                "command-id": command_id,
                "document-name": document,
                "instance-id": instance_id,
                "requested-date-time": iso(requested),
                "status": status,
            },
        }

    def _emit_service_changes(self) -> int:
        changes = [c for c in moto_patches.service_changes() if c.document_name == self.document_name]
        for change in changes:
            self.put_events(
                self._event(change.command_id, change.instance_id, change.document_name, change.requested_at,
                            change.status)
            )  # fmt: skip
            self.handled.append((change.command_id, change.instance_id, change.status))
        return len(changes)

    def command_event(self, end: moto_patches.CommandEnd) -> dict[str, Any]:
        """SSM's `EC2 Command Status-change Notification`, in the shape of AWS's sample."""
        return {
            "source": "aws.ssm",
            "detail-type": "EC2 Command Status-change Notification",
            "resources": [f"arn:aws:ec2:{self.region}:{self.account}:instance/{i}" for i in end.instance_ids],
            "detail": {
                "command-id": end.command_id,
                "document-name": end.document_name,
                "expire-after": iso(end.expires_after),
                "parameters": end.parameters,
                "requested-date-time": iso(end.requested_at),
                "status": end.status,
            },
        }

    def _emit_command_ends(self) -> int:
        """Once per command, when it reaches a terminal status (after its invocations' events)."""
        ends = [e for e in moto_patches.command_ends() if e.document_name == self.document_name]
        for end in ends:
            event = self.command_event(end)
            self.put_events(event)
            self.command_events.append(event)
        return len(ends)

    def step(self) -> int:
        """Run every pending invocation of our document once; returns how many ran or ended."""
        count = self._emit_service_changes()
        count += self._emit_command_ends()
        declared = moto_patches.document_parameters(self.document_name)
        for invocation in list(moto_patches.pending(self.account, self.region)):
            if invocation.document_name != self.document_name:
                continue
            key = (self.account, self.region, invocation.command_id, invocation.instance_id)
            if not moto_patches.start(*key):
                continue  # the service ended it (its event goes out below)
            started = datetime.now(UTC)
            moto_patches.set_invocation(*key, status="InProgress", started_at=started)
            event = self._event(invocation.command_id, invocation.instance_id, invocation.document_name,
                                invocation.requested_at, "Pending")  # fmt: skip
            if self.emit_pending:
                self.put_events(event)
            self.put_events({**event, "detail": {**event["detail"], "status": "InProgress"}})
            try:
                parameters = ssm_agent.validate(declared, invocation.parameters)
            except ssm_agent.ParameterError as error:
                report = ssm_agent.refused(error)
            else:
                report = self.runner(invocation.instance_id, parameters)
            moto_patches.set_invocation(
                *key,
                status=report.status,
                details=report.details,
                stdout=report.stdout,
                stderr=report.stderr,
                response_code=report.response_code,
                started_at=report.started_at,
                finished_at=report.finished_at,
            )
            moto_patches.finish(*key, status=report.status, details=report.details, seconds=report.seconds)
            self.put_events({**event, "detail": {**event["detail"], "status": report.status}})
            self.handled.append((invocation.command_id, invocation.instance_id, report.status))
            count += 1
        count += self._emit_service_changes()
        return count + self._emit_command_ends()
