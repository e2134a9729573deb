"""Close the gaps between moto and the real services that the local stack relies on.

EventBridge: moto delivers events to SQS targets without the `account` field, which every
real EventBridge event has; patched to deliver the whole envelope.

SSM Run Command:

moto (5.2) sends a command with `InstanceIds` to every instance in the region, accepts any
document and parameters, and reports every invocation as Success at once. The real service
validates parameters against the document's `allowedPattern`s, reaches only the named (or
tag-matched) managed nodes whose SSM agent is registered, answers `InvalidInstanceId` for a node
that is not, and starts each invocation as Pending until an agent runs it.

This module patches moto in this process (the local stack runs moto's server on a thread here)
so that it behaves like the service in those respects, and lets the node simulator play the
nodes' SSM agents: read the commands sent to them and report how each invocation ended.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

_lock = threading.RLock()
_installed = False
_documents: dict[str, dict[str, Any]] = {}  # name -> parameters spec
_unregistered: set[str] = set()  # instances whose SSM agent has not registered (yet)


@dataclass(frozen=True)
class PendingInvocation:
    command_id: str
    instance_id: str
    document_name: str
    parameters: dict[str, str]
    requested_at: datetime


def register_document(name: str, content: dict[str, Any]) -> None:
    with _lock:
        _documents[name] = dict(content.get("parameters", {}))


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
        _unregistered.clear()


def _error(code: str, message: str) -> Exception:
    from moto.core.exceptions import JsonRESTError

    return JsonRESTError(code, message)


def _validate(document_name: str | None, parameters: dict[str, Any], instance_ids: list[str]) -> dict[str, list[str]]:
    with _lock:
        spec = _documents.get(document_name or "")
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
        pattern = declared.get("allowedPattern")
        if pattern and not re.search(pattern, values[0]):
            raise _error("InvalidParameters", f"Parameter {name} value failed to satisfy allowedPattern")
        allowed = declared.get("allowedValues")
        if allowed and values[0] not in allowed:
            raise _error("InvalidParameters", f"Parameter {name} value is not one of allowedValues")
        resolved[name] = values
    bad = sorted(set(instance_ids) & unregistered)
    if bad:
        raise _error("InvalidInstanceId", f"Instances {bad} not in a valid state for account")
    return resolved


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
            for invocation in command.invocations:
                invocation.update(
                    Status="Pending",
                    StatusDetails="Pending",
                    ResponseCode=-1,
                    ExecutionStartDateTime="",
                    ExecutionEndDateTime="",
                    ExecutionElapsedTime="",
                )
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
                    requested_at=command.requested_date_time.replace(tzinfo=UTC)
                    if command.requested_date_time.tzinfo is None
                    else command.requested_date_time,
                )


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


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
    """Record what a simulated agent reports, as GetCommandInvocation will show it."""
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
            # GetCommandInvocation keeps the first 24,000 / 8,000 characters.
            StandardOutputContent=stdout[:24000],
            StandardErrorContent=stderr[:8000],
            ExecutionStartDateTime=_iso(started_at) if started_at else "",
            ExecutionEndDateTime=_iso(finished_at) if finished_at else "",
        )
        done = {"Success", "Failed", "TimedOut", "Cancelled"}
        # The counts follow each change (counting every invocation each time is quadratic in a fleet).
        for status_, sign in ((before, -1), (invocation["Status"], 1)):
            if status_ in done:
                command.completed_count += sign
                command.error_count += sign * (status_ != "Success")
        if command.completed_count >= len(command.invocations):
            command.status = "Success" if command.error_count == 0 else "Failed"
        else:
            command.status = "InProgress"
        command.status_details = command.status
        return
    raise KeyError(f"command {command_id} has no invocation on {instance_id}")
