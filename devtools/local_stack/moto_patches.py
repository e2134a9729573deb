"""Close the gaps between moto and the real services that the local stack relies on.

EventBridge: moto delivers events to SQS targets without the `account` field, which every
real EventBridge event has; patched to deliver the whole envelope.

SSM Run Command, as the service runs it (the node's side, the agent, is ssm_agent.py):

moto (5.2) sends a command with `InstanceIds` to every instance in the region, accepts any
document and parameters, and reports every invocation as Success at once. The real service:

- validates parameters against the document's `allowedPattern`s (`InvalidParameters`) and
  refuses a document plus parameters above 64 KB (`MaxDocumentSizeExceeded`);
- reaches only the named (or tag-matched) managed nodes whose SSM agent is registered, and
  answers `InvalidInstanceId` for a named node that is not;
- with tag `Targets`, authorises the caller on each instance it resolves: an instance the
  caller's policy does not allow ends Failed with `Access Denied`, not counted in MaxErrors;
- starts each invocation as Pending until an agent runs it, runs at most `MaxConcurrency`
  nodes at the same time (the next starts as one finishes), and once more than `MaxErrors`
  invocations failed or timed out, starts no more (those left end `Terminated`);
- expires a command `TimeoutSeconds` + `executionTimeout` after it was sent: an invocation not
  started by then (not even `TimeoutSeconds` after the send) ends `Delivery Timed Out`, which
  does not count in MaxErrors.

Time in a rollout is simulated: each command has its own clock that advances by the length of
each run (a simulated run says how long it took; a real one takes its wall time), so a test can
play a rollout of hours in a second. This module patches moto in this process (the local stack
runs moto's server on a thread here) and keeps, for the node simulator, the status changes that
the service itself makes (access denied, delivery timed out, terminated), whose events it emits.
"""

from __future__ import annotations

import heapq
import json
import math
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from prefetcher.timestamps import iso

_lock = threading.RLock()
_installed = False
_documents: dict[str, dict[str, Any]] = {}  # name -> parameters spec
_document_sizes: dict[str, int] = {}  # name -> bytes of content
_unregistered: set[str] = set()  # instances whose SSM agent has not registered (yet)
_rollouts: dict[str, Rollout] = {}  # command id -> its rollout
_service_changes: list[ServiceChange] = []  # status changes the service made, to be emitted
_command_ends: list[CommandEnd] = []  # commands that reached a terminal status, to be emitted

DOCUMENT_SIZE_LIMIT = 64 * 1024
DEFAULT_EXECUTION_TIMEOUT = 3600
TERMINAL = frozenset({"Success", "Failed", "TimedOut", "Cancelled"})


@dataclass(frozen=True)
class PendingInvocation:
    command_id: str
    instance_id: str
    document_name: str
    parameters: dict[str, str]
    requested_at: datetime


@dataclass(frozen=True)
class ServiceChange:
    """A status the service gave an invocation without an agent (its event is still to emit)."""

    command_id: str
    instance_id: str
    document_name: str
    requested_at: datetime
    status: str
    details: str


@dataclass(frozen=True)
class CommandEnd:
    """A whole command reached a terminal status (SSM's `EC2 Command Status-change Notification`
    is still to emit), with what that event carries."""

    command_id: str
    document_name: str
    requested_at: datetime
    expires_after: datetime
    parameters: dict[str, list[str]]
    instance_ids: tuple[str, ...]  # named by InstanceIds (empty for tag targets)
    status: str


def _count(value: str, targets: int, *, at_least_one: bool) -> int:
    """MaxConcurrency / MaxErrors as a number of nodes ("10" or "10%" of the targets)."""
    if value.endswith("%"):
        share = targets * int(value[:-1]) / 100
        return max(1, math.ceil(share)) if at_least_one else math.floor(share)
    return int(value) if value else (50 if at_least_one else 0)


@dataclass
class Rollout:
    """One command's progress in simulated seconds since it was sent."""

    timeout_seconds: int  # SendCommand TimeoutSeconds: latest start of an invocation
    execution_timeout: int
    concurrency: int
    max_errors: int
    slots: list[float] = field(default_factory=list)  # when each of `concurrency` slots frees
    errors: int = 0
    stopped: bool = False
    started: dict[str, float] = field(default_factory=dict)  # instance -> start
    runs: list[tuple[float, float]] = field(default_factory=list)  # (start, end) of each finished run

    def most_at_once(self) -> int:
        """The most invocations that ran at the same (simulated) time."""
        edges = sorted([(begin, 1) for begin, _ in self.runs] + [(end, -1) for _, end in self.runs])
        running = most = 0
        for _, step in edges:
            running += step
            most = max(most, running)
        return most


def register_document(name: str, content: dict[str, Any]) -> None:
    with _lock:
        _documents[name] = dict(content.get("parameters", {}))
        _document_sizes[name] = len(json.dumps(content, separators=(",", ":")).encode())


def document_parameters(name: str) -> dict[str, Any]:
    with _lock:
        return dict(_documents.get(name, {}))


def set_agent_registered(instance_id: str, registered: bool) -> None:
    """Whether SSM can reach the node (its agent has registered)."""
    with _lock:
        if registered:
            _unregistered.discard(instance_id)
        else:
            _unregistered.add(instance_id)


def reset() -> None:
    with _lock:
        _documents.clear()
        _document_sizes.clear()
        _unregistered.clear()
        _rollouts.clear()
        _service_changes.clear()
        _command_ends.clear()


def rollout(command_id: str) -> Rollout:
    with _lock:
        return _rollouts[command_id]


def _error(code: str, message: str) -> Exception:
    from moto.core.exceptions import JsonRESTError

    return JsonRESTError(code, message)


def _validate(document_name: str | None, parameters: dict[str, Any], instance_ids: list[str]) -> dict[str, list[str]]:
    with _lock:
        spec = _documents.get(document_name or "")
        size = _document_sizes.get(document_name or "", 0)
        unregistered = set(_unregistered)
    if spec is None:
        raise _error("InvalidDocument", f"Document {document_name} does not exist")
    unknown = sorted(set(parameters) - set(spec))
    if unknown:
        raise _error("InvalidParameters", f"Parameters {unknown} are not defined in the document")
    resolved: dict[str, list[str]] = {}
    for name, declared in spec.items():
        values = parameters.get(name)
        if values is None:
            if "default" not in declared:
                raise _error("InvalidParameters", f"Parameter {name} is required")
            values = [str(declared["default"])]
        if not isinstance(values, list) or len(values) != 1 or not isinstance(values[0], str):
            raise _error("InvalidParameters", f"Parameter {name} takes one string value")
        # The service checks with Java's regex library (the agent checks again, with Go's).
        pattern = declared.get("allowedPattern")
        if pattern and not re.search(pattern, values[0]):
            raise _error("InvalidParameters", f"Parameter {name} value failed to satisfy allowedPattern")
        allowed = declared.get("allowedValues")
        if allowed and values[0] not in allowed:
            raise _error("InvalidParameters", f"Parameter {name} value is not one of allowedValues")
        resolved[name] = values
    given = sum(len(value.encode()) for values in parameters.values() for value in values)
    if size + given > DOCUMENT_SIZE_LIMIT:
        raise _error(
            "MaxDocumentSizeExceeded",
            f"The size limit of a document is 64 KB: the document ({size} bytes) and its parameters "
            f"({given} bytes) exceed it",
        )
    bad = sorted(set(instance_ids) & unregistered)
    if bad:
        raise _error("InvalidInstanceId", f"Instances {bad} not in a valid state for account")
    return resolved


def instance_tags(account: str, region: str, instance_id: str) -> dict[str, str]:
    from moto.ec2.models import ec2_backends

    return dict(ec2_backends[account][region].tags.get(instance_id, {}))


def _authorised_on(command: Any, instance_id: str) -> bool:
    """With tag Targets, SSM authorises the caller on each instance it resolves."""
    from devtools.local_stack import iam

    principal = iam.current()
    if principal is None:
        return True
    arn = iam.arn_of("ec2", "instance", command.backend_region, command.account_id, InstanceId=instance_id)
    tags = instance_tags(command.account_id, command.backend_region, instance_id)
    call = principal.decide(iam.Requested("ssm:SendCommand", arn, iam.instance_context(tags)))
    if call.allowed:
        iam.record(call)
    else:
        iam.deny(call)
    return call.allowed


def install() -> None:
    """Patch moto's SSM backend (idempotent)."""
    global _installed
    with _lock:
        if _installed:
            return
        from moto.ssm import models

        original_send = models.SimpleSystemManagerBackend.send_command

        def send_command(self: Any, **kwargs: Any) -> Any:
            kwargs["parameters"] = _validate(
                kwargs.get("document_name"), kwargs.get("parameters") or {}, kwargs.get("instance_ids") or []
            )
            command = original_send(self, **kwargs)
            command.status = "Pending"
            command.status_details = "Pending"
            command.completed_count = 0
            command.instance_ids.sort()  # moto makes a set of them: keep a stable order
            command.invocations.sort(key=lambda invocation: invocation["InstanceId"])
            for invocation in command.invocations:
                invocation.update(
                    Status="Pending",
                    StatusDetails="Pending",
                    ResponseCode=-1,
                    ExecutionStartDateTime="",
                    ExecutionEndDateTime="",
                    ExecutionElapsedTime="",
                )
            timeout = int(command.parameters.get("executionTimeout", [DEFAULT_EXECUTION_TIMEOUT])[0])
            targets = len(command.invocations)
            with _lock:
                _rollouts[command.command_id] = Rollout(
                    timeout_seconds=int(kwargs.get("timeout_seconds") or 3600),
                    execution_timeout=timeout,
                    concurrency=_count(str(kwargs.get("max_concurrency") or "50"), targets, at_least_one=True),
                    max_errors=_count(str(kwargs.get("max_errors") or "0"), targets, at_least_one=False),
                )
            if command.targets:
                for invocation in command.invocations:
                    if not _authorised_on(command, invocation["InstanceId"]):
                        _service_end(command, invocation["InstanceId"], "Failed", "Access Denied")
            return command

        def targets(self: Any) -> list[str]:
            # No Targets: only the named InstanceIds (moto would add every instance). Tag targets
            # reach only running instances whose agent is registered, as in SSM. Resolved in one
            # pass over the instances (moto's own filter is quadratic in the fleet's size).
            if not self.targets:
                return []
            from moto.ec2.models import ec2_backends

            ec2 = ec2_backends[self.account_id][self.backend_region]
            wanted: list[tuple[str, set[str] | None]] = []
            for target in self.targets:
                key = target["Key"]
                if key.startswith("tag:"):
                    wanted.append((key[4:], set(target["Values"])))
                elif key == "tag-key":
                    wanted.extend((value, None) for value in target["Values"])
                elif key == "InstanceIds":
                    wanted.append(("@id", set(target["Values"])))
                else:
                    return []
            with _lock:
                unregistered = set(_unregistered)
            found = []
            for reservation in ec2.reservations.values():
                for instance in reservation.instances:
                    if instance.state != "running" or instance.id in unregistered:
                        continue
                    tags = ec2.tags.get(instance.id, {})
                    if all(_matches(instance.id, tags, key, values) for key, values in wanted):
                        found.append(instance.id)
            return found

        models.SimpleSystemManagerBackend.send_command = send_command  # type: ignore[method-assign,assignment]
        models.Command._get_instance_ids_from_targets = targets  # type: ignore[method-assign]

        from moto.events.utils import EventTemplateParser

        EventTemplateParser.DEFAULT_EVENT_INPUT_TEMPLATE = (
            '{"version": "0", "id": "<id>", "detail-type": "<detail-type>", "source": "<source>", '
            '"account": "<account>", "time": <time>, "region": "<region>", "resources": <resources>, '
            '"detail": <detail>}'
        )
        _installed = True


def _matches(instance_id: str, tags: dict[str, str], key: str, values: set[str] | None) -> bool:
    if key == "@id":
        return values is not None and instance_id in values
    return key in tags and (values is None or tags[key] in values)


def _backend(account: str, region: str) -> Any:
    from moto.ssm.models import ssm_backends

    return ssm_backends[account][region]


def _requested(command: Any) -> datetime:
    moment: datetime = command.requested_date_time
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def pending(account: str, region: str) -> Iterator[PendingInvocation]:
    """Invocations no simulated agent has picked up yet (status Pending)."""
    for command in list(_backend(account, region)._commands):
        for invocation in command.invocations:
            if invocation["Status"] == "Pending":
                yield PendingInvocation(
                    command_id=command.command_id,
                    instance_id=invocation["InstanceId"],
                    document_name=command.document_name,
                    parameters={key: values[0] for key, values in command.parameters.items()},
                    requested_at=_requested(command),
                )


def start(account: str, region: str, command_id: str, instance_id: str) -> bool:
    """An agent is about to run this invocation: True if the rollout lets it start (a slot is
    free before the delivery deadline); otherwise the service ends it (Delivery Timed Out)."""
    command = _backend(account, region).get_command_by_id(command_id)
    with _lock:
        state = _rollouts.get(command_id)
        if state is None:
            return True  # not sent through SendCommand here (a test's own invocation)
        if state.stopped:
            return False
        begin = heapq.heappop(state.slots) if len(state.slots) >= state.concurrency else 0.0
        if begin > state.timeout_seconds:
            heapq.heappush(state.slots, begin)
            late = True
        else:
            state.started[instance_id] = begin
            late = False
    if late:
        _service_end(command, instance_id, "TimedOut", "Delivery Timed Out")
        return False
    return True


def finish(
    account: str, region: str, command_id: str, instance_id: str, *, status: str, details: str, seconds: float
) -> None:
    """The run ended after `seconds` (simulated): free its slot, count errors, and past
    MaxErrors stop the rollout (the invocations not started end Terminated)."""
    command = _backend(account, region).get_command_by_id(command_id)
    with _lock:
        state = _rollouts.get(command_id)
        if state is None or instance_id not in state.started:
            return
        begin = state.started[instance_id]
        end = begin + min(seconds, state.execution_timeout)
        heapq.heappush(state.slots, end)
        state.runs.append((begin, end))
        if status == "Failed" or (status == "TimedOut" and details == "Execution Timed Out"):
            state.errors += 1
        stop = state.errors > state.max_errors and not state.stopped
        if stop:
            state.stopped = True
    if stop:
        for invocation in command.invocations:
            if invocation["Status"] == "Pending":
                _service_end(command, invocation["InstanceId"], "Failed", "Terminated")


def _service_end(command: Any, instance_id: str, status: str, details: str) -> None:
    set_invocation(command.account_id, command.backend_region, command.command_id, instance_id, status=status,
                   details=details)  # fmt: skip
    with _lock:
        _service_changes.append(
            ServiceChange(command.command_id, instance_id, command.document_name, _requested(command), status, details)
        )


def service_changes() -> list[ServiceChange]:
    """The status changes the service made since the last call (their events are to emit)."""
    with _lock:
        changes = list(_service_changes)
        _service_changes.clear()
    return changes


def _command_ended(command: Any) -> None:
    # SSM expires a command TimeoutSeconds + executionTimeout after the send (ExpiresAfter).
    with _lock:
        state = _rollouts.get(command.command_id)
    requested = _requested(command)
    expires = (
        requested + timedelta(seconds=state.timeout_seconds + state.execution_timeout)
        if state
        else command.expires_after
    )
    with _lock:
        _command_ends.append(
            CommandEnd(
                command_id=command.command_id,
                document_name=command.document_name,
                requested_at=_requested(command),
                expires_after=expires.replace(tzinfo=UTC) if expires.tzinfo is None else expires,
                parameters={key: [str(v) for v in values] for key, values in command.parameters.items()},
                instance_ids=() if command.targets else tuple(command.instance_ids),
                status=command.status,
            )
        )


def command_ends() -> list[CommandEnd]:
    """The commands that reached a terminal status since the last call (their events are to emit)."""
    with _lock:
        ends = list(_command_ends)
        _command_ends.clear()
    return ends


def set_invocation(
    account: str,
    region: str,
    command_id: str,
    instance_id: str,
    *,
    status: str,
    details: str | None = None,
    stdout: str = "",
    stderr: str = "",
    response_code: int = -1,
    started_at: datetime | None = None,
    finished_at: datetime | None = None,
) -> None:
    """Record an invocation's status as GetCommandInvocation will show it. The output is what
    the agent reported (ssm_agent.report cuts it as the agent does)."""
    command = _backend(account, region).get_command_by_id(command_id)
    index = getattr(command, "_prefetcher_index", None)
    if index is None or len(index) != len(command.invocations):
        index = {i["InstanceId"]: i for i in command.invocations}
        command._prefetcher_index = index
    invocation = index.get(instance_id)
    if invocation is not None:
        before = invocation["Status"]
        invocation.update(
            Status=status,
            StatusDetails=details or status,
            ResponseCode=response_code,
            StandardOutputContent=stdout,
            StandardErrorContent=stderr,
            ExecutionStartDateTime=iso(started_at) if started_at else "",
            ExecutionEndDateTime=iso(finished_at) if finished_at else "",
        )
        # The counts follow each change (counting every invocation each time is quadratic in a fleet).
        for status_, sign in ((before, -1), (invocation["Status"], 1)):
            if status_ in TERMINAL:
                command.completed_count += sign
                command.error_count += sign * (status_ != "Success")
        was = command.status
        if command.completed_count >= len(command.invocations):
            command.status = "Success" if command.error_count == 0 else "Failed"
        else:
            command.status = "InProgress"
        command.status_details = command.status
        if command.status in TERMINAL and was not in TERMINAL:
            _command_ended(command)
        return
    raise KeyError(f"command {command_id} has no invocation on {instance_id}")
