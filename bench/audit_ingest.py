"""Audit ingest: 10,000 invocation status events, in SQS batches of 10 and of 100, through the
audit function against DynamoDB Local; beside a plain loop of one conditional UpdateItem per
event against the same DynamoDB Local, in the same run. Events per second, and DynamoDB requests
per event."""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from prefetcher import clients, ssm
from prefetcher.refs import ImageRef
from prefetcher.settings import AgentSettings
from prefetcher.states import Invocation
from prefetcher.store import AuditTable, CommandRecord

from bench.common import main_of, save
from bench.harness import counting, fresh_stack, local_servers, timed
from devtools.local_stack import moto_patches
from devtools.local_stack.lambda_runtime import sqs_event
from tests.helpers import moto_commands

NODES = 5000  # x (InProgress, Success) = 10,000 events
REGISTRY = "123456789012.dkr.ecr.us-east-1.amazonaws.com"


def prepare(stack: Any, nodes: list[str], tag: str) -> tuple[str, list[str]]:
    """A command to every node (recorded as the push path records it), its invocations finished;
    the 10,000 status events' SQS bodies. (SSM's 50-instance limit per command is not applied by
    the local stack; the audit function does not care how the command was sent.)"""
    image = ImageRef(REGISTRY, "ml/trainer", "sha256:" + uuid.uuid4().hex * 2, tag)
    agent = AgentSettings.model_validate({"DOCUMENT_NAME": stack.output("PrefetchDocument")})
    sent = stack.client("ssm").send_command(
        DocumentName=agent.document_name, InstanceIds=nodes, Parameters=ssm.agent_parameters([image], agent)
    )["Command"]
    AuditTable(stack.output("AuditTable")).commands.record(
        CommandRecord(command_id=sent["CommandId"], kind="push", cluster="ml-prod", images=(image,),
                      requested_at=sent["RequestedDateTime"])
    )  # fmt: skip
    (command,) = [c for c in moto_commands() if c.command_id == sent["CommandId"]]
    pinned = command.parameters["Images"][0]
    image = pinned.split(f":{tag}@")[0] + "@" + pinned.rsplit("@", 1)[1]
    line = json.dumps({"image": image, "digest": pinned.rsplit("@", 1)[1], "tag": tag, "outcome": "pulled",
                       "bytes": 1000, "seconds": 1.0, "error": ""})  # fmt: skip
    now = datetime.now(UTC)
    for node in nodes:
        moto_patches.set_invocation("123456789012", "us-east-1", command.command_id, node, status="Success", stdout=line,
                                response_code=0, started_at=now, finished_at=now)  # fmt: skip
    requested = command.requested_date_time.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    bodies = []
    # As they come: every node's InProgress, then (minutes later) every node's Success.
    for status in ("InProgress", "Success"):
        for node in nodes:
            bodies.append(json.dumps({
                "version": "0", "id": str(uuid.uuid4()), "detail-type": "EC2 Command Invocation Status-change Notification",
                "source": "aws.ssm", "account": "123456789012", "time": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "region": "us-east-1", "resources": [],
                "detail": {"command-id": command.command_id, "document-name": stack.output("PrefetchDocument"),
                           "instance-id": node, "requested-date-time": requested, "status": status},
            }))  # fmt: skip
    return line, bodies


@contextmanager
def ssm_from_memory(line: str) -> Iterator[None]:
    """GetCommandInvocation answered from memory. What is measured is the function against
    DynamoDB Local; moto's SSM runs in this process and would take the CPU (and the GIL) that
    the function needs (in AWS it is a network call elsewhere). Its figure is reported apart."""
    original = ssm.get_invocation
    now = datetime.now(UTC)

    def answer(_command: str, _instance: str) -> Invocation:
        return Invocation(status="Success", status_details="Success", response_code=0, stdout=line,
                          started_at=now, finished_at=now)  # fmt: skip

    ssm.get_invocation = answer  # type: ignore[assignment]
    try:
        yield
    finally:
        ssm.get_invocation = original  # type: ignore[assignment]


def through_function(stack: Any, bodies: list[str], batch: int) -> tuple[float, dict[str, int]]:
    function = stack.functions["SsmAuditFunction"]
    events = []
    for start in range(0, len(bodies), batch):
        messages = [{"MessageId": str(uuid.uuid4()), "ReceiptHandle": "r", "Body": b, "Attributes": {}}
                    for b in bodies[start : start + batch]]  # fmt: skip
        events.append(sqs_event(messages, "arn:aws:sqs:us-east-1:123456789012:AuditQueue", "us-east-1"))
    with counting() as calls:
        elapsed, failures = timed(lambda: sum(len(function.invoke(e)["batchItemFailures"]) for e in events))
    assert failures == 0
    return elapsed, dict(calls.calls)


def plain_loop(table: str, bodies: list[str]) -> float:
    """One conditional UpdateItem per event, nothing else: the simplest correct ingest."""
    ddb = clients.client("dynamodb")

    def run() -> None:
        for body in bodies:
            detail = json.loads(body)["detail"]
            rank = "2" if detail["status"] == "Success" else "1"
            ddb.update_item(
                TableName=table,
                Key={"pk": {"S": f"LOOP#{detail['command-id']}"}, "sk": {"S": f"NODE#{detail['instance-id']}"}},
                UpdateExpression="SET #s = :s, version = :v",
                ConditionExpression="attribute_not_exists(version) OR version < :v",
                ExpressionAttributeNames={"#s": "state"},
                ExpressionAttributeValues={":s": {"S": detail["status"]}, ":v": {"S": f"{detail['requested-date-time']}#{rank}"}},
            )  # fmt: skip

    elapsed, _ = timed(run)
    return elapsed


def run() -> dict[str, Any]:
    with local_servers() as servers:
        stack = fresh_stack(servers)
        nodes = [f"i-{n:017x}" for n in range(NODES)]
        table = stack.output("AuditTable")
        results: dict[str, Any] = {}
        # Side by side: loop, function with batches of 10, function with batches of 100, loop again.
        _, bodies = prepare(stack, nodes, "loop")
        results["loop_seconds"] = [plain_loop(table, bodies)]
        for batch in (10, 100):
            line, bodies = prepare(stack, nodes, f"b{batch}")
            with ssm_from_memory(line):
                elapsed, calls = through_function(stack, bodies, batch)
            results[f"batch_{batch}"] = {"seconds": elapsed, "calls": calls}
            print(f"  batches of {batch}: {len(bodies) / elapsed:.0f} events/s", flush=True)
        _, bodies = prepare(stack, nodes, "loop2")
        results["loop_seconds"].append(plain_loop(table, bodies))
        _, bodies = prepare(stack, nodes[:1000], "moto")
        elapsed, _ = through_function(stack, bodies, 100)
        results["moto_ssm_events_per_second"] = round(len(bodies) / elapsed, 1)
        print(f"  batches of 100, SSM by moto in this process: {len(bodies) / elapsed:.0f} events/s", flush=True)
    events = 2 * NODES
    loop_rate = events / (sum(results["loop_seconds"]) / len(results["loop_seconds"]))
    figures: dict[str, Any] = {}
    details: dict[str, Any] = {"events": events, "loop_events_per_second": round(loop_rate, 1)}
    worst_requests = 0.0
    for batch in (10, 100):
        r = results[f"batch_{batch}"]
        rate = events / r["seconds"]
        ddb = sum(n for name, n in r["calls"].items() if name.startswith("dynamodb."))
        details[f"batch_{batch}"] = {
            "events_per_second": round(rate, 1), "ratio_to_loop": round(rate / loop_rate, 3),
            "dynamodb_requests_per_event": round(ddb / events, 3), "calls": r["calls"],
        }  # fmt: skip
        worst_requests = max(worst_requests, ddb / events)
    # The figure is for the batch size template.yaml gives the audit queue (100); 10 is shown too.
    figures["audit_vs_loop_ratio"] = details["batch_100"]["ratio_to_loop"]
    figures["audit_requests_per_event"] = round(worst_requests, 3)
    details["loop_seconds"] = [round(s, 2) for s in results["loop_seconds"]]
    details["batch_100_with_moto_ssm_events_per_second"] = results["moto_ssm_events_per_second"]
    save("audit_ingest", figures, details)
    return {**figures, **details}


main = main_of(run)


if __name__ == "__main__":
    sys.exit(main())
