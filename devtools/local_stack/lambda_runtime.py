"""Run the functions of template.yaml in this process the way Lambda would: the handler from
CodeUri/Handler, the environment CloudFormation would give it, a Lambda context, the function's
Timeout (an invocation still running then is stopped and counts as a function error), its role
(every AWS call it makes is authorised against it: iam.py), and the event sources that
template.yaml wires (an SQS event source mapping with partial batch failures; EventBridge's
asynchronous invoke with retries and an on-failure destination)."""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import importlib.util
import io
import json
import logging
import os
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from devtools.local_stack import iam
from devtools.local_stack.template_resolver import ROOT, Stack


class FunctionTimedOut(Exception):
    """The invocation ran past the function's Timeout (Lambda: "Task timed out after N seconds")."""


class _Stopped(BaseException):
    """Raised inside a handler that ran past its Timeout: not an Exception, so no handler code
    catches it; Lambda would freeze the environment, this stops the thread where it is."""


def call_with_timeout(handler: Callable[[Any, Any], Any], event: Any, context: Any, timeout: float) -> Any:
    """`handler(event, context)`, stopped at `timeout` seconds as Lambda stops an invocation."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = handler(event, context)
        except _Stopped:
            outcome["stopped"] = True
        except BaseException as error:  # noqa: BLE001 - handed to the caller as the invocation's error
            outcome["error"] = error

    worker = threading.Thread(target=run, name=f"lambda-{getattr(context, 'function_name', 'function')}", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        # Raised at the thread's next Python instruction (a call blocked in a socket returns first:
        # botocore's read timeout bounds that).
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(worker.ident or 0), ctypes.py_object(_Stopped))
        worker.join(60)
        raise FunctionTimedOut(f"Task timed out after {timeout:.2f} seconds")
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("result")


def bind_logs(module: Any, stream: Any) -> None:
    """Point the module's Powertools loggers at this stack's log. Powertools configures a
    service's logger once per process: a module loaded again (a second stack in the same process)
    would otherwise keep writing to the first stack's log, closed by then."""
    from aws_lambda_powertools import Logger

    for value in vars(module).values():
        if isinstance(value, Logger):
            for handler in value.handlers:
                if isinstance(handler, logging.StreamHandler):
                    with handler.lock or contextlib.nullcontext():
                        handler.stream = stream  # not setStream: it flushes the old stream, closed by now


@dataclass
class LocalContext:
    """What Lambda passes as `context` (the attributes Powertools and our handlers read)."""

    function_name: str
    invoked_function_arn: str
    memory_limit_in_mb: int
    timeout_seconds: float
    log_group_name: str
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    function_version: str = "$LATEST"
    log_stream_name: str = "local"
    identity: Any = None
    client_context: Any = None
    _started: float = field(default_factory=time.monotonic)

    def get_remaining_time_in_millis(self) -> int:
        left = self.timeout_seconds - (time.monotonic() - self._started)
        return max(0, int(left * 1000))


@contextlib.contextmanager
def patched_environ(values: dict[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.update(values)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@dataclass
class LocalFunction:
    """One AWS::Serverless::Function of the template, loaded from source."""

    stack: Stack
    logical_id: str
    base_environment: dict[str, str]
    log: io.TextIOBase | Any = field(default_factory=lambda: sys.stderr)
    # The context's time limit, if not the template's Timeout (the fault tests shorten it).
    timeout_seconds: float | None = None
    # When the invocation is stopped, if not at the template's Timeout (None: the template's).
    enforced_timeout_seconds: float | None = None
    # The function's role (None: calls are not authorised, as outside a deployed stack).
    principal: iam.Principal | None = None
    _module: ModuleType | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.stack.local_name(self.logical_id)

    @property
    def arn(self) -> str:
        return f"arn:aws:lambda:{self.stack.region}:{self.stack.account}:function:{self.name}"

    def environment(self) -> dict[str, str]:
        # The template's variables, then the local stack's (endpoints, credentials), which win as
        # `sam local invoke --env-vars` values do.
        return {
            **self.stack.function_environment(self.logical_id),
            **self.base_environment,
            "AWS_LAMBDA_FUNCTION_NAME": self.name,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(self.stack.function_property(self.logical_id, "MemorySize", 128)),
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_REGION": self.stack.region,
            "AWS_DEFAULT_REGION": self.stack.region,
        }

    def _handler(self) -> Callable[[Any, Any], Any]:
        properties = self.stack.resources[self.logical_id]["Properties"]
        module_name, _, attribute = properties["Handler"].rpartition(".")
        if self._module is None:
            path = ROOT / properties["CodeUri"] / f"{module_name.replace('.', '/')}.py"
            spec = importlib.util.spec_from_file_location(f"local_{self.logical_id}_{module_name}", path)
            if spec is None or spec.loader is None:
                raise ImportError(f"cannot load {path}")
            module = importlib.util.module_from_spec(spec)
            # Powertools binds its log handler to sys.stdout when the module is imported; logs
            # belong on stderr (as with `sam local invoke`), results on stdout.
            with patched_environ(self.environment()), contextlib.redirect_stdout(self.log):
                spec.loader.exec_module(module)
            bind_logs(module, self.log)
            self._module = module
        handler: Callable[[Any, Any], Any] = getattr(self._module, attribute)
        return handler

    @property
    def timeout(self) -> float:
        """The function's Timeout in template.yaml (Lambda's default: 3 s)."""
        return float(self.stack.resolve(self.stack.function_property(self.logical_id, "Timeout", 3)))

    def invoke(self, event: Any) -> Any:
        """Invoke synchronously; exceptions propagate, as a function error would (a timeout
        raises FunctionTimedOut)."""
        handler = self._handler()
        context = LocalContext(
            function_name=self.name,
            invoked_function_arn=self.arn,
            memory_limit_in_mb=int(self.stack.function_property(self.logical_id, "MemorySize", 128)),
            timeout_seconds=self.timeout_seconds or self.timeout,
            log_group_name=f"/aws/lambda/{self.name}",
        )
        role = iam.acting_as(self.principal) if self.principal else contextlib.nullcontext()
        with patched_environ(self.environment()), contextlib.redirect_stdout(self.log), role:
            return call_with_timeout(handler, event, context, self.enforced_timeout_seconds or self.timeout)


def sqs_event(messages: list[dict[str, Any]], queue_arn: str, region: str) -> dict[str, Any]:
    """The event Lambda's SQS event source mapping builds from received messages."""
    records = []
    for message in messages:
        attributes = message.get("Attributes", {})
        records.append(
            {
                "messageId": message["MessageId"],
                "receiptHandle": message["ReceiptHandle"],
                "body": message["Body"],
                "attributes": {
                    key: attributes[key]
                    for key in (
                        "ApproximateReceiveCount",
                        "SentTimestamp",
                        "SenderId",
                        "ApproximateFirstReceiveTimestamp",
                    )
                    if key in attributes
                },
                "messageAttributes": {
                    name: {
                        "stringValue": value.get("StringValue"),
                        "binaryValue": value.get("BinaryValue"),
                        "stringListValues": [],
                        "binaryListValues": [],
                        "dataType": value["DataType"],
                    }
                    for name, value in message.get("MessageAttributes", {}).items()
                },
                "md5OfBody": message.get("MD5OfBody") or hashlib.md5(message["Body"].encode()).hexdigest(),  # noqa: S324 - SQS's own checksum
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": region,
            }
        )
    return {"Records": records}


@dataclass
class SqsEventSource:
    """Lambda's SQS event source mapping: receive a batch, invoke, delete what succeeded.

    Failed records stay in the queue, untouched, and come back when their visibility timeout
    ends (the queue's, or what the function set); the queue's redrive policy moves them to its
    dead-letter queue after maxReceiveCount."""

    function: LocalFunction
    queue_url: str
    queue_arn: str
    batch_size: int = 10
    report_batch_item_failures: bool = True
    sqs: Any = None

    def poll_once(self, wait: int = 0) -> int:
        """Deliver at most one batch; returns the number of records delivered."""
        # Like the event source's batching window: gather up to BatchSize from several receives.
        messages: list[dict[str, Any]] = []
        while len(messages) < self.batch_size:
            answer = self.sqs.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=min(self.batch_size - len(messages), 10),
                WaitTimeSeconds=wait if not messages else 0,
                AttributeNames=["All"],
                MessageAttributeNames=["All"],
            )
            seen = {m["MessageId"] for m in messages}
            received = [m for m in answer.get("Messages", []) if m["MessageId"] not in seen]
            if not received:
                break
            messages += received
        if not messages:
            return 0
        event = sqs_event(messages, self.queue_arn, self.function.stack.region)
        failed: set[str] = set()
        try:
            result = self.function.invoke(event)
            if self.report_batch_item_failures and isinstance(result, dict):
                failed = {item["itemIdentifier"] for item in result.get("batchItemFailures", [])}
        except Exception:  # noqa: BLE001 - a function error fails the whole batch, as in Lambda
            traceback.print_exc(file=self.function.log)
            failed = {m["MessageId"] for m in messages}
        for message in messages:
            if message["MessageId"] not in failed:
                self._delete(message)
        return len(messages)

    def _delete(self, message: dict[str, Any]) -> None:
        # ReceiptHandleIsInvalid: it became visible again and was received anew while this batch
        # ran (the local visibility timeout is short); it is delivered again, as SQS may.
        with contextlib.suppress(self.sqs.exceptions.ReceiptHandleIsInvalid):
            self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])


@dataclass
class AsyncEventSource:
    """An EventBridge rule's Lambda target: EventBridge invokes asynchronously; Lambda retries
    a failed invocation MaximumRetryAttempts times, then sends a record of it to the
    OnFailure destination. Locally the rule targets a tap queue that this drains."""

    function: LocalFunction
    tap_queue_url: str
    max_retries: int = 2
    # Lambda waits about 1 and 2 minutes between its async retries; locally 0 unless set.
    retry_delay: float = 0.0
    on_failure_queue_url: str = ""
    sqs: Any = None
    results: list[Any] = field(default_factory=list)

    def poll_once(self, wait: int = 0) -> int:
        answer = self.sqs.receive_message(QueueUrl=self.tap_queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=wait)
        messages = answer.get("Messages", [])
        for message in messages:
            self.deliver(json.loads(message["Body"]))
            # Received anew meanwhile (short local visibility): delivered again, as EventBridge may.
            with contextlib.suppress(self.sqs.exceptions.ReceiptHandleIsInvalid):
                self.sqs.delete_message(QueueUrl=self.tap_queue_url, ReceiptHandle=message["ReceiptHandle"])
        return len(messages)

    def deliver(self, event: Any) -> Any:
        error: BaseException | None = None
        for attempt in range(self.max_retries + 1):
            if attempt and self.retry_delay:
                time.sleep(self.retry_delay)
            try:
                result = self.function.invoke(event)
            except Exception as caught:  # noqa: BLE001 - recorded in the on-failure record
                error = caught
                traceback.print_exc(file=self.function.log)
                continue
            self.results.append(result)
            return result
        if self.on_failure_queue_url and error is not None:
            self.sqs.send_message(
                QueueUrl=self.on_failure_queue_url,
                MessageBody=json.dumps(
                    {
                        "version": "1.0",
                        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
                        "requestContext": {
                            "requestId": str(uuid.uuid4()),
                            "functionArn": f"{self.function.arn}:$LATEST",
                            "condition": "RetriesExhausted",
                            "approximateInvokeCount": self.max_retries + 1,
                        },
                        "requestPayload": event,
                        "responseContext": {
                            "statusCode": 200,
                            "executedVersion": "$LATEST",
                            "functionError": "Unhandled",
                        },
                        "responsePayload": {
                            "errorMessage": str(error),
                            "errorType": type(error).__name__,
                        },
                    }
                ),
            )
        return None
