"""Fault injection for the three paths, through the real retry machinery.

Every AWS call a function makes goes through `prefetcher.clients`; the injector hooks those
clients (botocore events) and, at a given rate, answers a call with:

- throttling: `ProvisionedThroughputExceededException` (DynamoDB), `ThrottlingException` (SSM,
  SQS), `RequestLimitExceeded` (EC2), as the service would, so botocore's standard retry mode
  retries them with backoff;
- a 5xx error (`InternalServerError` / `InternalError`);
- a read timeout (the request may or may not have been done; botocore retries it);
- a race with a duplicate: the same conditional write (or PartiQL batch), done once just before
  this one, as a duplicate delivery racing this one would (so the real call meets real
  conditional-check failures from DynamoDB Local);
- for a PartiQL batch that gets through, statement errors: each statement, at the same rate,
  answers `ThrottlingError` and is not done; the others are done for real;
- `InvalidInstanceId` for a SendCommand to named instances (the node's agent is not registered).

and, at the same rate per invocation, the function times out mid-invocation: at a random AWS
call, the invocation stops dead (no cleanup, no response), as a Lambda timeout does; for a
batch, after a random number of its records.

Only the delays are changed: botocore's backoff and the SendCommand retry pauses are scaled down
to a millisecond so that 1,000 events run in minutes. Everything else (the retry decisions, the
partial batch responses, the queues' visibility and redrive, Lambda's async retries and
on-failure destination) is the real machinery or the local stack's emulation of it."""

from __future__ import annotations

import json
import random
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ReadTimeoutError

from devtools.local_stack.aws_calls import hooked_clients


class LambdaTimeout(BaseException):
    """The invocation was stopped: not an Exception, so nothing in the function cleans up."""


class _Raw:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_kwargs: Any) -> Iterator[bytes]:
        yield self._body


JSON_THROTTLE = {
    "dynamodb": "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
    "ssm": "ThrottlingException",
    "sqs": "com.amazonaws.sqs#ThrottlingException",
}
CALL_FAULTS = ("throttle", "server_error", "read_timeout", "duplicate_race", "invalid_instance")


@dataclass
class FaultInjector:
    rate: float = 0.20
    seed: int = 7
    invalid_instance: bool = False  # only the join path sends to named instances
    injected: Counter[str] = field(default_factory=Counter)
    calls: int = 0
    _random: random.Random = field(init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _timeout_in: int = 0  # calls left before the armed timeout fires (0: none armed)
    _endpoints: dict[str, str] = field(default_factory=dict)
    _plain: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)

    # ---- attach to the clients the functions use -----------------------------------------------

    @contextmanager
    def active(self) -> Iterator[FaultInjector]:
        with hooked_clients(self._attach):
            yield self

    def _attach(self, service: str, client: Any) -> None:
        client.meta.events.register("before-parameter-build", self._remember)
        client.meta.events.register("before-send", self._maybe_fail)

    def _remember(self, params: dict[str, Any], context: dict[str, Any], model: Any, **_kwargs: Any) -> None:
        context["prefetcher_params"] = dict(params)
        context["prefetcher_operation"] = model.name

    # ---- per invocation --------------------------------------------------------------------------

    def arm_timeout(self) -> bool:
        """Decide whether the coming invocation times out (at a random AWS call)."""
        with self._lock:
            if self._random.random() < self.rate:
                self._timeout_in = self._random.randint(1, 12)
                return True
            self._timeout_in = 0
            return False

    def disarm(self) -> None:
        self._timeout_in = 0

    # ---- per call ----------------------------------------------------------------------------------

    def _maybe_fail(self, request: Any, event_name: str, **kwargs: Any) -> AWSResponse | None:
        _, service, operation = event_name.split(".", 2)
        context = request.context or {}
        with self._lock:
            self.calls += 1
            if self._timeout_in:
                self._timeout_in -= 1
                if self._timeout_in == 0:
                    self.injected["lambda_timeout"] += 1
                    raise LambdaTimeout(f"timed out during {service}.{operation}")
            faulty = self._random.random() < self.rate
            kind = self._random.choice(CALL_FAULTS) if faulty else ""
        params = context.get("prefetcher_params", {})
        if not faulty:
            # A PartiQL batch that gets through may still fail statement by statement.
            return self._partly_throttled(params) if operation == "BatchExecuteStatement" else None
        if kind == "invalid_instance":
            if not (self.invalid_instance and operation == "SendCommand" and params.get("InstanceIds")):
                kind = "throttle"
            else:
                self.injected[kind] += 1
                return self._json_error(400, "InvalidInstanceId", "Instances not in a valid state for account")
        if operation == "BatchExecuteStatement" and kind == "duplicate_race":
            self.injected[kind] += 1
            self._plain_dynamodb().batch_execute_statement(**params)  # the twin's batch, just before
            return None
        if kind == "duplicate_race":
            if (
                service != "dynamodb"
                or operation not in ("UpdateItem", "PutItem")
                or "ConditionExpression" not in params
            ):
                kind = "server_error"
            elif str(params.get("Key", params.get("Item", {})).get("pk", {}).get("S", "")).startswith("idempotency#"):
                kind = "server_error"  # a phantom in-flight twin of the idempotency record is no real race
            else:
                self.injected[kind] += 1
                self._duplicate(operation, params)
                return None
        self.injected[kind] += 1
        if kind == "read_timeout":
            raise ReadTimeoutError(endpoint_url=request.url)
        if kind == "throttle":
            if service == "ec2":
                return self._xml_error(503, "RequestLimitExceeded", "Request limit exceeded.")
            return self._json_error(400, JSON_THROTTLE.get(service, "ThrottlingException"), "Rate exceeded")
        if service == "ec2":
            return self._xml_error(500, "InternalError", "An internal error has occurred")
        return self._json_error(500, "InternalServerError", "injected 5xx")

    def _plain_dynamodb(self) -> Any:
        """A client outside the functions' hooks, for what the harness itself does."""
        client = self._plain.get("dynamodb")
        if client is None:
            client = boto3.client("dynamodb")
            self._plain["dynamodb"] = client
        return client

    def _partly_throttled(self, params: dict[str, Any]) -> AWSResponse | None:
        """A PartiQL batch that DynamoDB throttled in part: each statement, at the fault rate, is
        not done and answers `ThrottlingError`; the others are done for real. HTTP 200, as
        DynamoDB answers a batch whatever its statements' outcomes."""
        statements = params["Statements"]
        with self._lock:
            throttled = {i for i in range(len(statements)) if self._random.random() < self.rate}
            self.injected["statement_errors"] += len(throttled)
        if not throttled:
            return None
        done = [statement for i, statement in enumerate(statements) if i not in throttled]
        answers = iter(self._plain_dynamodb().batch_execute_statement(Statements=done)["Responses"] if done else [])
        error = {"Error": {"Code": "ThrottlingError", "Message": "Throughput exceeds the current capacity"}}
        responses = [error if i in throttled else next(answers) for i in range(len(statements))]
        body = json.dumps({"Responses": responses}).encode()
        headers = {"Content-Type": "application/x-amz-json-1.0", "x-amzn-RequestId": "fault"}
        return AWSResponse("https://fault", 200, headers, _Raw(body))

    def _duplicate(self, operation: str, params: dict[str, Any]) -> None:
        """The same conditional write, by a 'duplicate delivery', just before this one."""
        client = self._plain_dynamodb()
        with suppress(client.exceptions.ConditionalCheckFailedException):
            getattr(client, "update_item" if operation == "UpdateItem" else "put_item")(**params)

    @staticmethod
    def _json_error(status: int, code: str, message: str) -> AWSResponse:
        body = json.dumps({"__type": code, "message": message}).encode()
        headers = {"Content-Type": "application/x-amz-json-1.1", "x-amzn-RequestId": "fault"}
        return AWSResponse("https://fault", status, headers, _Raw(body))

    @staticmethod
    def _xml_error(status: int, code: str, message: str) -> AWSResponse:
        body = (
            f"<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors>"
            "<RequestID>fault</RequestID></Response>"
        ).encode()
        return AWSResponse("https://fault", status, {"Content-Type": "text/xml"}, _Raw(body))


@contextmanager
def fast_retries() -> Iterator[None]:
    """botocore's backoff and the SendCommand retry pauses, scaled to a millisecond."""
    from botocore.retries import standard
    from prefetcher import ssm

    original_delay = standard.ExponentialBackoff.delay_amount
    original_pause = ssm.pause
    standard.ExponentialBackoff.delay_amount = lambda self, context: 0.001  # type: ignore[method-assign]
    ssm.pause = lambda seconds: None  # type: ignore[assignment]
    try:
        yield
    finally:
        standard.ExponentialBackoff.delay_amount = original_delay  # type: ignore[method-assign]
        ssm.pause = original_pause  # type: ignore[assignment]
