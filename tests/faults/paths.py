"""The three paths under fault injection: 1,000 events each, and what became of every one.

For each event: applied exactly once (its effect is there once), applied twice (its effect is
there more than once), dead-lettered (not applied, kept in the path's dead-letter queue), or lost
(neither). Lost and applied twice must be 0."""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from devtools.local_stack import moto_patches
from devtools.local_stack.ec2_fleet import NodeSpec, launch
from devtools.local_stack.lambda_runtime import SqsEventSource
from devtools.local_stack.servers import Servers
from devtools.local_stack.stack import LocalStack
from tests.faults.harness import FaultInjector, LambdaTimeout, fast_retries
from tests.helpers import load_event, moto_commands

ACCOUNT, REGION = "123456789012", "us-east-1"


class FunctionTimedOut(Exception):
    """How the event source sees an invocation that was stopped."""


@dataclass
class PathResult:
    path: str
    sent: int
    faults: dict[str, int]
    aws_calls: int
    applied_once: int = 0
    dead_lettered: int = 0
    dead_lettered_with_reason: int = 0
    lost: int = 0
    applied_twice: int = 0
    seconds: float = 0.0
    dead_letter_reasons: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _stack(servers: Servers, log: Any, name: str, extra_env: dict[str, dict[str, str]] | None = None) -> LocalStack:
    servers.reset_moto()
    stack = LocalStack(
        servers, name=name, overrides={"TargetClusters": "ml-prod,ml-batch"}, log=log, visibility_timeout=1,
        extra_env=extra_env or {},
    ).deploy()  # fmt: skip
    return stack


def _with_timeouts(stack: LocalStack, injector: FaultInjector) -> None:
    """Functions may time out mid-invocation; Lambda's async retries come after the context's
    limit (here 0.2 s, so in-flight idempotency records expire as they would in a minute)."""
    for function in stack.functions.values():
        function.timeout_seconds = 0.2
        original = function.invoke

        def invoke(event: Any, original: Any = original) -> Any:
            injector.arm_timeout()
            try:
                return original(event)
            except LambdaTimeout as stopped:
                raise FunctionTimedOut(str(stopped)) from None
            finally:
                injector.disarm()

        function.invoke = invoke  # type: ignore[method-assign]
    for source in stack.sources:
        if hasattr(source, "retry_delay"):
            source.retry_delay = 0.25


def _drain(stack: LocalStack, queue: str) -> list[dict[str, Any]]:
    sqs = stack.client("sqs")
    found: dict[str, dict[str, Any]] = {}
    while True:
        answer = sqs.receive_message(QueueUrl=stack.queues[queue], MaxNumberOfMessages=10, MessageAttributeNames=["All"],
                                     VisibilityTimeout=30)  # fmt: skip
        messages = answer.get("Messages", [])
        if not messages:
            return list(found.values())
        for message in messages:
            found[message["MessageId"]] = message


def _payload(message: dict[str, Any]) -> dict[str, Any]:
    body = json.loads(message["Body"])
    return body["requestPayload"] if isinstance(body, dict) and "requestPayload" in body else body


def _reason(message: dict[str, Any]) -> str:
    attributes = message.get("MessageAttributes", {})
    if "ErrorMessage" in attributes:
        return str(attributes["ErrorMessage"]["StringValue"])[:120]
    body = json.loads(message["Body"])
    payload = body.get("responsePayload") if isinstance(body, dict) else None
    if payload:
        return f"{payload.get('errorType')}: {payload.get('errorMessage', '')}"[:120]
    return "(moved by the queue's redrive policy after maxReceiveCount receives)"


def _has_reason(message: dict[str, Any]) -> bool:
    if "ErrorMessage" in message.get("MessageAttributes", {}):
        return True
    body = json.loads(message["Body"])
    return isinstance(body, dict) and bool((body.get("responsePayload") or {}).get("errorMessage"))


def _digest(n: int) -> str:
    return "sha256:" + hashlib.sha256(f"fault-image-{n}".encode()).hexdigest()


# ---- push ---------------------------------------------------------------------------------------


def run_push(servers: Servers, log: Any, events: int = 1000, rate: float = 0.2) -> PathResult:
    stack = _stack(servers, log, f"fp{uuid.uuid4().hex[:6]}")
    ec2 = stack.client("ec2")
    for cluster in ("ml-prod", "ml-batch"):
        launch(ec2, NodeSpec(cluster, "managed", "general"), 2)
    base = load_event("ecr-push-tagged.json")
    pushes = []
    for n in range(events):
        event = json.loads(json.dumps(base))
        event["detail"]["repository-name"] = f"fault/app{n % 40}"
        event["detail"]["image-tag"] = f"v{n}"
        event["detail"]["image-digest"] = _digest(n)
        pushes.append(event)
    injector = FaultInjector(rate=rate, seed=11)
    started = datetime.now(UTC)
    with fast_retries(), injector.active():
        _with_timeouts(stack, injector)
        for start in range(0, events, 10):
            stack.put_events(*pushes[start : start + 10])
        stack.run_sources(timeout=1800)
    result = PathResult("push", events, dict(injector.injected), injector.calls)
    sent: Counter[tuple[str, str]] = Counter()
    for command in moto_commands():
        digest = command.parameters["Images"][0].rsplit("@", 1)[1]
        sent[(digest, command.targets[0]["Key"].rsplit("/", 1)[1])] += 1
    dead = {_payload(m)["detail"]["image-digest"]: m for m in _drain(stack, "ImagePushDLQ")}
    reasons: Counter[str] = Counter()
    for n in range(events):
        counts = [sent[(_digest(n), cluster)] for cluster in ("ml-prod", "ml-batch")]
        if max(counts) > 1:
            result.applied_twice += 1
        elif counts == [1, 1]:
            result.applied_once += 1
        elif _digest(n) in dead:
            result.dead_lettered += 1
            result.dead_lettered_with_reason += _has_reason(dead[_digest(n)])
            reasons[_reason(dead[_digest(n)])] += 1
        else:
            result.lost += 1
    result.dead_letter_reasons = dict(reasons.most_common(8))
    result.seconds = round((datetime.now(UTC) - started).total_seconds(), 1)
    return result


# ---- node join ------------------------------------------------------------------------------------


def run_join(servers: Servers, log: Any, events: int = 1000, rate: float = 0.2) -> PathResult:
    stack = _stack(servers, log, f"fj{uuid.uuid4().hex[:6]}", {"NodeJoinFunction": {"JOIN_RETRY_DELAYS": "1"}})
    stack.functions["ImagePushFunction"].invoke(load_event("ecr-push-tagged.json"))  # a current image
    before = {c.command_id for c in moto_commands()}
    ec2 = stack.client("ec2")
    instances = launch(ec2, NodeSpec("ml-prod", "managed", "general"), events // 2)
    instances += launch(ec2, NodeSpec("ml-batch", "karpenter", "batch"), events - events // 2)
    base = load_event("ec2-running.json")
    joins = []
    for instance in instances:
        event = json.loads(json.dumps(base))
        event["id"] = str(uuid.uuid4())
        event["time"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        event["detail"]["instance-id"] = instance
        joins.append(event)
    injector = FaultInjector(rate=rate, seed=13, invalid_instance=True)
    started = datetime.now(UTC)
    with fast_retries(), injector.active():
        _with_timeouts(stack, injector)
        for start in range(0, events, 10):
            stack.put_events(*joins[start : start + 10])
        stack.run_sources(timeout=1800)
    result = PathResult("join", events, dict(injector.injected), injector.calls)
    sent: Counter[str] = Counter(
        c.instance_ids[0]
        for c in moto_commands()
        if c.command_id not in before and len(c.instance_ids) == 1 and not c.targets
    )
    dead = {_payload(m)["detail"]["instance-id"]: m for m in _drain(stack, "NodeJoinDLQ")}
    reasons: Counter[str] = Counter()
    for instance in instances:
        if sent[instance] > 1:
            result.applied_twice += 1
        elif sent[instance] == 1:
            result.applied_once += 1
        elif instance in dead:
            result.dead_lettered += 1
            result.dead_lettered_with_reason += _has_reason(dead[instance])
            reasons[_reason(dead[instance])] += 1
        else:
            result.lost += 1
    result.dead_letter_reasons = dict(reasons.most_common(8))
    result.seconds = round((datetime.now(UTC) - started).total_seconds(), 1)
    return result


# ---- audit ------------------------------------------------------------------------------------------


def run_audit(servers: Servers, log: Any, events: int = 1000, rate: float = 0.2) -> PathResult:
    from prefetcher.store import AuditTable

    stack = _stack(servers, log, f"fa{uuid.uuid4().hex[:6]}")
    nodes = launch(stack.client("ec2"), NodeSpec("ml-prod", "managed", "general"), events // 2)
    push = load_event("ecr-push-tagged.json")
    stack.functions["ImagePushFunction"].invoke(push)
    (command,) = [c for c in moto_commands() if c.instance_ids]
    pinned = command.parameters["Images"][0]
    image = pinned.split(":v1.4.0@")[0] + "@" + pinned.rsplit("@", 1)[1]
    line = json.dumps({"image": image, "digest": pinned.rsplit("@", 1)[1], "tag": "v1.4.0", "outcome": "pulled",
                       "bytes": 100, "seconds": 1.0, "error": ""})  # fmt: skip
    now = datetime.now(UTC)
    for node in nodes:
        moto_patches.set_invocation(ACCOUNT, REGION, command.command_id, node, status="Success", stdout=line,
                                response_code=0, started_at=now, finished_at=now)  # fmt: skip
    statuses = _status_events(stack, command, nodes)
    injector = FaultInjector(rate=rate, seed=17)
    writes: Counter[tuple[str, str]] = Counter()
    started = datetime.now(UTC)
    # Batches of 25, not template.yaml's 100: the timeout fault is drawn per invocation, and 1,000
    # events in batches of 100 are too few invocations for it to show. (Writes that span several
    # PartiQL batches are tested in tests/integration/test_audit_writes.py.)
    (source,) = [
        s for s in stack.sources if isinstance(s, SqsEventSource) and s.function.logical_id == "SsmAuditFunction"
    ]
    source.batch_size = 25
    with fast_retries(), injector.active():
        _with_timeouts(stack, injector)
        remove = _counting_writes(writes)
        try:
            for start in range(0, len(statuses), 10):
                stack.put_events(*statuses[start : start + 10])
            stack.run_sources(timeout=1800)
        finally:
            remove()
    result = PathResult("audit", len(statuses), dict(injector.injected), injector.calls)
    table = AuditTable(stack.output("AuditTable"))
    _, records = table.queries.image("ml/trainer", pinned.rsplit("@", 1)[1])
    final = {r.instance_id: r for r in records}
    dead = Counter(
        (b["detail"]["instance-id"], b["detail"]["status"]) for b in (_payload(m) for m in _drain(stack, "AuditDLQ"))
    )
    for node in nodes:
        record = final.get(node)
        for status in ("InProgress", "Success"):
            version_written = writes[(node, status)]
            # Applied: the node's record shows it (Success: cached), or it was written once, or
            # (InProgress) the record already held the invocation's end, which an earlier state
            # may never replace. A write landed by the injector's racing duplicate counts too.
            ended = record is not None and record.state == "cached"
            applied = ended or version_written == 1
            if version_written > 1:
                result.applied_twice += 1
            elif applied:
                result.applied_once += 1
            elif dead[(node, status)]:
                result.dead_lettered += 1
            else:
                result.lost += 1
    result.notes.append(
        "applied twice: the same state of one invocation written twice (the conditional write forbids it)"
    )
    result.seconds = round((datetime.now(UTC) - started).total_seconds(), 1)
    return result


def _status_events(stack: LocalStack, command: Any, nodes: list[str]) -> list[dict[str, Any]]:
    """Each node's InProgress, then its Success, as SSM reports them."""
    requested = command.requested_date_time.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    return [
        {
            "source": "aws.ssm", "detail-type": "EC2 Command Invocation Status-change Notification",
            "resources": [f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/{node}"],
            "detail": {"command-id": command.command_id, "document-name": stack.output("PrefetchDocument"),
                       "instance-id": node, "requested-date-time": requested, "status": status},
        }
        for node in nodes
        for status in ("InProgress", "Success")
    ]  # fmt: skip


def _counting_writes(writes: Counter[tuple[str, str]]) -> Any:
    """Count every node-image write the functions' clients make, by (node, status)."""
    from prefetcher import clients

    def hook(service: str, client: Any) -> None:
        events = client.meta.events
        events.register(
            "after-call.dynamodb.UpdateItem",
            lambda http_response, context, **_: _count_write(writes, http_response, context),
        )
        events.register("after-call.dynamodb.BatchExecuteStatement",
                        lambda parsed, context, **_: _count_statements(writes, parsed, context))  # fmt: skip

    return clients.on_create(hook)


def _count_statements(writes: Counter[tuple[str, str]], parsed: dict[str, Any], context: dict[str, Any]) -> None:
    """The writes a PartiQL batch did: every statement answered without an error."""
    statements = context.get("prefetcher_params", {}).get("Statements", [])
    for statement, response in zip(statements, parsed.get("Responses", []), strict=False):
        if response.get("Error"):
            continue
        text = statement["Statement"]
        if text.startswith("UPDATE"):
            names = [*re.findall(r'SET "(\w+)" = \?', text), "pk", "sk", "version"]
        else:
            names = re.findall(r"'(\w+)': \?", text)
        values = {name: value.get("S", "") for name, value in zip(names, statement["Parameters"], strict=True)}
        if values.get("pk", "").startswith("IMAGE#") and values.get("sk", "").startswith("NODE#"):
            status = {"in-progress": "InProgress", "cached": "Success"}.get(values["state"], values["state"])
            writes[(values["sk"].removeprefix("NODE#"), status)] += 1


def _count_write(writes: Counter[tuple[str, str]], http_response: Any, context: dict[str, Any]) -> None:
    params = context.get("prefetcher_params", {})
    key = params.get("Key", {})
    if http_response.status_code != 200 or not key.get("sk", {}).get("S", "").startswith("NODE#"):
        return
    if not key.get("pk", {}).get("S", "").startswith("IMAGE#"):
        return
    state = next((v["S"] for k, v in params.get("ExpressionAttributeValues", {}).items()
                  if params["UpdateExpression"].find(f"#state = {k}") >= 0), "")  # fmt: skip
    status = {"in-progress": "InProgress", "cached": "Success"}.get(state, state)
    writes[(key["sk"]["S"].removeprefix("NODE#"), status)] += 1
