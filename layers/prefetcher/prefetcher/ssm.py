"""Run Command: send our document, read an invocation's result. Turns SSM's errors into ours."""

from __future__ import annotations

import math
import random
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from prefetcher import clients
from prefetcher.eks_tags import CommandTarget
from prefetcher.errors import ConfigurationError, NodeNotReachableError, NotPermittedError, TransientError
from prefetcher.refs import ImageRef, images_parameter
from prefetcher.settings import AgentSettings
from prefetcher.states import Invocation
from prefetcher.timestamps import event_time, parse_api_time

COMMENT_MAX = 100
PULL, INVENTORY = "pull", "inventory"  # the document's `Mode`


def agent_parameters(images: list[ImageRef], agent: AgentSettings, mode: str = PULL) -> dict[str, list[str]]:
    """The document's parameters. Every value matches an allowedPattern in template.yaml and
    reaches the script only as an SSM_<name> environment variable. `Mode` is sent only for an
    inventory (a pull is the document's default), so pulls need nothing new of the document."""
    if mode not in (PULL, INVENTORY):
        raise ValueError(f"unknown mode {mode!r}")
    return {
        **({"Mode": [mode]} if mode != PULL else {}),
        "Images": [images_parameter(images)],
        "MinFreeDiskMiB": [str(agent.min_free_disk_mib)],
        "Parallelism": [str(agent.pull_parallelism)],
        "PullTimeoutSeconds": [str(agent.pull_timeout_seconds)],
        "CleanupSuperseded": ["true" if agent.cleanup_superseded else "false"],
        "PinImages": ["true" if agent.pin_images else "false"],
        "executionTimeout": [str(agent.execution_timeout_seconds)],
    }


TIMEOUT_SECONDS_MAX = 2_592_000  # SendCommand's TimeoutSeconds: at most 30 days


def rollout_turns(max_concurrency: str, nodes: int | None) -> int:
    """How many nodes run after one another at most (turns), with `max_concurrency` of `nodes`
    targets running at the same time: a percentage p gives at most ceil(100 / p) turns whatever
    the fleet's size; a number n gives ceil(nodes / n)."""
    if max_concurrency.endswith("%"):
        return math.ceil(100 / int(max_concurrency[:-1]))
    return max(1, math.ceil((nodes or 1) / int(max_concurrency)))


def command_timeout(agent: AgentSettings, turns: int = 1) -> int:
    """SendCommand's TimeoutSeconds for a rollout of `turns`. SSM expires a command
    TimeoutSeconds + executionTimeout after it is sent, and an invocation that has not started
    TimeoutSeconds after the send is Delivery Timed Out (it never runs). In a rollout, a node may
    start only when one before it finishes, each taking up to executionTimeout: so every node's
    start is covered by DeliveryTimeoutSeconds + (turns - 1) x ExecutionTimeoutSeconds (at most
    30 days, SSM's limit)."""
    timeout = agent.delivery_timeout_seconds + (turns - 1) * agent.execution_timeout_seconds
    return min(timeout, TIMEOUT_SECONDS_MAX)


# SendCommand is not safe to repeat blindly: its own retries, below, look for the command first.
SEND_ATTEMPTS = 5
_THROTTLED = frozenset({"ThrottlingException", "TooManyUpdates", "RequestLimitExceeded"})
_AMBIGUOUS = frozenset({"InternalServerError", "ServiceUnavailable", "InternalFailure"})


def pause(seconds: float) -> None:
    """The wait between SendCommand tries (replaced by the fault-injection tests)."""
    time.sleep(seconds)


def send_pull(
    images: list[ImageRef],
    agent: AgentSettings,
    comment: str,
    *,
    target: CommandTarget | None = None,
    instance_ids: list[str] | None = None,
    marker: str = "",
    turns: int = 1,
    mode: str = PULL,
) -> tuple[str, datetime]:
    """Send one pull command (or, with `mode` INVENTORY, an inventory of the same images), by tag
    targets or to named instances, for a rollout of `turns` (command_timeout). Returns the
    command id and SSM's requested time. Throttled tries are repeated with backoff; a try whose
    outcome is unknown (5xx, timeout, connection error) is repeated only if no command carrying
    `marker` in its Comment exists by then."""
    request: dict[str, Any] = {
        "DocumentName": agent.document_name,
        "Parameters": agent_parameters(images, agent, mode),
        "TimeoutSeconds": command_timeout(agent, turns),
        "MaxConcurrency": agent.max_concurrency,
        "MaxErrors": agent.max_errors,
        "Comment": comment[:COMMENT_MAX],
    }
    if target is not None:
        request["Targets"] = target.as_api()
    elif instance_ids:
        request["InstanceIds"] = instance_ids
    else:
        raise ValueError("send_pull needs a target or instance ids")
    started = datetime.now(UTC)
    for attempt in range(1, SEND_ATTEMPTS + 1):
        try:
            answer = clients.client("ssm", attempts=1).send_command(**request)
            command = answer["Command"]
            return command["CommandId"], command["RequestedDateTime"]
        except ClientError as error:
            code = error.response["Error"]["Code"]
            message = error.response["Error"].get("Message", "")
            if code == "InvalidInstanceId":
                raise NodeNotReachableError(f"SSM cannot reach {instance_ids}: {message}") from None
            if code == "AccessDeniedException" and instance_ids:
                # IAM authorises SendCommand on each named instance: no retry changes the answer.
                raise NotPermittedError(f"SendCommand to {', '.join(instance_ids)} was denied: {message}") from None
            if code in (
                "InvalidDocument", "InvalidParameters", "InvalidDocumentVersion", "InvalidRole",
                "MaxDocumentSizeExceeded", "AccessDeniedException",
            ):  # fmt: skip
                raise ConfigurationError(f"SendCommand rejected the request ({code}): {message}") from None
            if code not in _THROTTLED | _AMBIGUOUS:
                raise
            failure: Exception = TransientError(f"SendCommand failed after {attempt} tries ({code}): {message}")
            ambiguous = code in _AMBIGUOUS
        except (HTTPClientError, BotoConnectionError) as error:
            failure, ambiguous = TransientError(f"SendCommand failed after {attempt} tries: {error}"), True
        if ambiguous and marker:
            found = find_command(agent.document_name, marker, since=started - timedelta(minutes=1))
            if found is not None:
                return found
        if attempt == SEND_ATTEMPTS:
            raise failure
        pause(min(2.0**attempt * 0.1, 5.0) * (0.5 + random.random() / 2))  # noqa: S311 - jitter
    raise AssertionError("unreachable")


def find_command(document_name: str, marker: str, since: datetime) -> tuple[str, datetime] | None:
    """The command of our document, sent after `since`, whose Comment carries `marker`."""
    pages = (
        clients.client("ssm")
        .get_paginator("list_commands")
        .paginate(
            Filters=[
                {"key": "DocumentName", "value": document_name},
                {"key": "InvokedAfter", "value": event_time(since)},
            ]
        )
    )
    for page in pages:
        for command in page.get("Commands", []):
            if marker in command.get("Comment", "") and command.get("DocumentName") == document_name:
                requested = parse_api_time(command.get("RequestedDateTime")) or datetime.now(UTC)
                return command["CommandId"], requested
    return None


def get_invocation(command_id: str, instance_id: str) -> Invocation:
    """What a finished invocation printed and why it ended."""
    try:
        answer = clients.client("ssm").get_command_invocation(CommandId=command_id, InstanceId=instance_id)
    except ClientError as error:
        code = error.response["Error"]["Code"]
        if code in ("InvocationDoesNotExist", "ThrottlingException", "InternalServerError"):
            # Right after the send, the invocation may not be readable yet (eventual consistency).
            raise TransientError(f"GetCommandInvocation {command_id}/{instance_id}: {code}") from None
        raise
    return Invocation(
        status=answer.get("Status", ""),
        status_details=answer.get("StatusDetails", ""),
        response_code=int(answer.get("ResponseCode", -1)),
        stdout=answer.get("StandardOutputContent", ""),
        stderr=answer.get("StandardErrorContent", ""),
        started_at=parse_api_time(answer.get("ExecutionStartDateTime")),
        finished_at=parse_api_time(answer.get("ExecutionEndDateTime")),
    )


def command_target_count(command_id: str) -> int | None:
    """How many invocations SSM made of a command (`ListCommands` `TargetCount`), or None when
    SSM does not know the command (older than its 30 days of history)."""
    try:
        answer = clients.client("ssm").list_commands(CommandId=command_id)
    except ClientError as error:
        if error.response["Error"]["Code"] == "InvalidCommandId":
            return None
        raise
    found = answer.get("Commands", [])
    return int(found[0].get("TargetCount", 0)) if found else None
