"""Inventory (issue 12): AWS calls per inventory round, for 10 to 5,000 nodes (the goal: calls
that do not depend on the number of nodes), and the audit ingest rate of inventory results.

Calls per round, two figures per fleet size, on the fan-out benchmark's simulated fleet:
- the inventory's send for one cluster (`verify.send_inventory`), as a fleet check makes it;
- a whole FleetCheckFunction invocation (a schedule event through its queue) with nothing to
  catch up: every live node is in the table and holds the cluster's current image, verified.

Ingest: the status events of inventory invocations (each node's InProgress, then its Success,
whose output is one result line per current image and the disk line, as the simulated agent
writes them) through SsmAuditFunction in SQS batches of 100, against DynamoDB Local. Round 1
finds no record of the node-images and creates them; round 2, the daily steady state, refreshes
them (verified_at, expiry). Events per second, DynamoDB requests per event and per verified
record."""

from __future__ import annotations

import copy
import hashlib
import json
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from prefetcher import clients, ssm, verify
from prefetcher.refs import ImageRef
from prefetcher.settings import AgentSettings
from prefetcher.states import Invocation
from prefetcher.store import AuditTable, keys
from prefetcher.timestamps import iso

from bench.common import main_of, save
from bench.harness import counting, fresh_stack, local_servers, median, timed
from devtools.local_stack.ec2_fleet import NodeSpec, launch_in_process
from devtools.local_stack.lambda_runtime import sqs_event
from devtools.local_stack.node_simulator import SimulatedNodes
from tests.helpers import load_event, moto_commands

NODES = (10, 100, 1000, 5000)
ROUNDS = 3
CLUSTER = "ml-prod"
INGEST_NODES = 1000  # x (InProgress, Success) = 2,000 events
INGEST_IMAGES = 20  # current images of the cluster: a result line each, per node
ABSENT_EVERY = 20  # one node in 20 never had one image, and one in 20 loses one after round 1 (evicted)
BATCH = 100  # template.yaml's batch size for the audit queue
AUDIT_QUEUE = "arn:aws:sqs:us-east-1:123456789012:AuditQueue"


def _s(value: object) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, int | float):
        return {"N": str(value)}
    return {"S": str(value)}


def push(stack: Any, repository: str = "ml/trainer", n: int = 0) -> None:
    """A push of a tag to `repository` through ImagePushFunction: the image becomes current."""
    event = copy.deepcopy(load_event("ecr-push-tagged.json"))
    event["id"] = f"bench-inventory-{hashlib.sha256(repository.encode()).hexdigest()[:12]}-{n}"
    event["detail"]["repository-name"] = repository
    event["detail"]["image-digest"] = "sha256:" + hashlib.sha256(repository.encode()).hexdigest()
    result = stack.functions["ImagePushFunction"].invoke(event)
    assert result["action"] == "sent", result


def seed_live_nodes(table: str, nodes: list[str], images: list[ImageRef], *, records_only: bool = False) -> None:
    """The nodes' items and their records of `images` (cached, verified now: the nodes
    answered the last inventory), as the node-join and audit paths write them (prefetcher/store),
    with BatchWriteItem for speed."""
    now = datetime.now(UTC)
    items: list[dict[str, Any]] = []
    for node in nodes:
        if not records_only:
            items.append({**keys.node(CLUSTER, node), "type": "node", "cluster": CLUSTER, "instance_id": node,
                      "joined_at": iso(now - timedelta(days=2)), "gsi1pk": keys.node_pk(node),
                      "gsi1sk": keys.NODE_ITEM, "node_state": "warm", "gsi2pk": keys.live_pk(CLUSTER),
                      "gsi2sk": node})  # fmt: skip
        for image in images:
            items.append({**keys.node_image(image.repository, image.digest, node), "type": "node-image",
                          "instance_id": node, "cluster": CLUSTER, "repository": image.repository,
                          "digest": image.digest, "tag": image.tag, "registry": image.registry, "state": "cached",
                          "holds": True, "requested_at": iso(now - timedelta(days=1)),
                          "finished_at": iso(now - timedelta(days=1)), "verified_at": iso(now),
                          keys.TTL_ATTRIBUTE: int((now + timedelta(days=30)).timestamp()), "command_id": "c",
                          "version": "v", "gsi1pk": keys.node_pk(node), "gsi1sk": keys.image_pk(image.repository, image.digest),
                          "gsi2pk": keys.coverage_pk(CLUSTER, image.repository, image.digest), "gsi2sk": node})  # fmt: skip
    ddb = clients.client("dynamodb")

    def write(start: int) -> None:
        request = {
            table: [{"PutRequest": {"Item": {k: _s(v) for k, v in item.items()}}} for item in items[start : start + 25]]
        }
        while request:
            request = ddb.batch_write_item(RequestItems=request).get("UnprocessedItems") or {}

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(write, range(0, len(items), 25)))


def schedule_event(stack: Any, event_id: str) -> dict[str, Any]:
    body = {**stack.scheduled_event("FleetCheckScheduleRule"), "id": event_id}
    message = {"MessageId": str(uuid.uuid4()), "ReceiptHandle": "r", "Body": json.dumps(body), "Attributes": {}}
    return sqs_event([message], "arn:aws:sqs:us-east-1:123456789012:FleetCheckQueue", "us-east-1")


def one_round(name: str, stack: Any, table: AuditTable, agent: AgentSettings, key: str) -> Any:
    """One inventory round: the send alone, or the whole FleetCheckFunction invocation."""
    if name == "send_inventory":
        return verify.send_inventory(table, agent, CLUSTER, key=f"send-inventory-{key}")
    return stack.functions["FleetCheckFunction"].invoke(schedule_event(stack, f"fleet-check-{key}"))


def calls_per_round() -> dict[str, Any]:
    figures: dict[str, Any] = {"inventory_calls_per_round": {}, "fleet_check_calls_per_round": {}}
    seconds: dict[str, dict[str, float]] = {"send_inventory": {}, "fleet_check": {}}
    by_operation: dict[str, dict[str, dict[str, int]]] = {"send_inventory": {}, "fleet_check": {}}
    with local_servers() as servers:
        for nodes in NODES:
            stack = fresh_stack(servers, CLUSTER)
            launched = launch_in_process(NodeSpec(CLUSTER, "managed", "general"), nodes // 2)
            launched += launch_in_process(NodeSpec(CLUSTER, "karpenter", "default"), nodes - nodes // 2)
            push(stack)
            table = AuditTable(stack.output("AuditTable"))
            images = table.catalog.current_images(CLUSTER)
            seed_live_nodes(stack.output("AuditTable"), launched, images)
            agent = AgentSettings.model_validate({"DOCUMENT_NAME": stack.output("PrefetchDocument")})
            verify.send_inventory(table, agent, CLUSTER, key="bench-warm")  # warm: clients made
            stack.functions["FleetCheckFunction"].invoke(schedule_event(stack, f"bench-warm-{nodes}"))
            for name in ("send_inventory", "fleet_check"):
                times, counts = [], []
                for r in range(ROUNDS):
                    # The nodes answered the previous round's inventory (none is silent).
                    seed_live_nodes(stack.output("AuditTable"), launched, images, records_only=True)
                    with counting() as calls:
                        elapsed, result = timed(partial(one_round, name, stack, table, agent, f"{nodes}-{r}"))
                    if name == "fleet_check":
                        assert result["batchItemFailures"] == [], result
                    else:
                        assert len(result) == 1, result
                    times.append(elapsed)
                    counts.append(sum(calls.calls.values()))
                    by_operation[name][str(nodes)] = dict(calls.calls)
                key = "inventory_calls_per_round" if name == "send_inventory" else "fleet_check_calls_per_round"
                figures[key][str(nodes)] = int(median(counts))
                seconds[name][str(nodes)] = round(median(times), 4)
                print(f"  {name}, {nodes} nodes: {int(median(counts))} calls, {median(times):.3f} s", flush=True)
    details = {"rounds_per_size": ROUNDS, "seconds_median": seconds, "calls_by_operation": by_operation}
    return {"figures": figures, "details": details}


@contextmanager
def invocations_from_memory(stdout: dict[str, str]) -> Iterator[None]:
    """GetCommandInvocation answered from memory (as in bench/audit_ingest.py: moto's SSM would
    take the CPU the function needs in this process); each node's own output."""
    original = ssm.get_invocation
    now = datetime.now(UTC)

    def answer(_command: str, instance: str) -> Invocation:
        return Invocation(status="Success", status_details="Success", response_code=0, stdout=stdout[instance],
                          started_at=now, finished_at=now)  # fmt: skip

    ssm.get_invocation = answer  # type: ignore[assignment]
    try:
        yield
    finally:
        ssm.get_invocation = original  # type: ignore[assignment]


def inventory_bodies(stack: Any, command_id: str, nodes: list[str]) -> list[str]:
    (command,) = [c for c in moto_commands() if c.command_id == command_id]
    requested = command.requested_date_time.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return [
        json.dumps(
            {
                "version": "0",
                "id": str(uuid.uuid4()),
                "detail-type": "EC2 Command Invocation Status-change Notification",
                "source": "aws.ssm",
                "account": "123456789012",
                "time": now,
                "region": "us-east-1",
                "resources": [],
                "detail": {
                    "command-id": command_id,
                    "document-name": stack.output("PrefetchDocument"),
                    "instance-id": node,
                    "requested-date-time": requested,
                    "status": status,
                },
            }
        )  # fmt: skip
        for status in ("InProgress", "Success")
        for node in nodes
    ]


def ingest() -> dict[str, Any]:
    with local_servers() as servers:
        stack = fresh_stack(servers, CLUSTER)
        nodes = launch_in_process(NodeSpec(CLUSTER, "managed", "general"), INGEST_NODES)
        for n in range(INGEST_IMAGES):
            push(stack, f"team/app{n}")
        table = AuditTable(stack.output("AuditTable"))
        images = table.catalog.current_images(CLUSTER)
        assert len(images) == INGEST_IMAGES, images
        agent = AgentSettings.model_validate({"DOCUMENT_NAME": stack.output("PrefetchDocument")})
        # What each node answers: the simulated agent's inventory output (all held; one node in
        # ABSENT_EVERY has lost its first image).
        simulated = SimulatedNodes(sizes={image.repository: 1_287_651_328 for image in images})
        stdout: dict[str, str] = {}
        for n, node in enumerate(nodes):
            for image in images[1:] if n % ABSENT_EVERY == 0 else images:
                simulated.place(node, image)
        audit = stack.functions["SsmAuditFunction"]
        rounds: dict[str, Any] = {}
        for name in ("first", "steady"):
            if name == "steady":  # since round 1, one node in ABSENT_EVERY lost its last image
                for node in nodes[1::ABSENT_EVERY]:
                    simulated.evict(node, images[-1])
            (command_id,) = verify.send_inventory(table, agent, CLUSTER, key=f"bench-ingest-{name}")
            (command,) = [c for c in moto_commands() if c.command_id == command_id]
            parameters = {k: ",".join(v) for k, v in command.parameters.items()}
            for node in nodes:
                stdout[node] = simulated(node, parameters).stdout
            bodies = inventory_bodies(stack, command_id, nodes)
            events = [
                sqs_event(
                    [
                        {"MessageId": str(uuid.uuid4()), "ReceiptHandle": "r", "Body": b, "Attributes": {}}
                        for b in bodies[start : start + BATCH]
                    ],
                    AUDIT_QUEUE,
                    "us-east-1",
                )  # fmt: skip
                for start in range(0, len(bodies), BATCH)
            ]
            with invocations_from_memory(stdout), counting() as calls:
                elapsed, failures = timed(lambda ev=events: sum(len(audit.invoke(e)["batchItemFailures"]) for e in ev))
            assert failures == 0, failures
            ddb = sum(count for op, count in calls.calls.items() if op.startswith("dynamodb."))
            records = INGEST_NODES * INGEST_IMAGES
            rounds[name] = {
                "seconds": round(elapsed, 2), "events_per_second": round(len(bodies) / elapsed, 1),
                "dynamodb_requests_per_event": round(ddb / len(bodies), 3),
                "dynamodb_requests_per_verified_record": round(ddb / records, 4),
                "lines_per_second": round(records / elapsed, 1), "calls": dict(calls.calls),
            }  # fmt: skip
            print(f"  inventory ingest, {name} round: {len(bodies) / elapsed:.0f} events/s, "
                  f"{ddb / len(bodies):.3f} DynamoDB requests per event", flush=True)  # fmt: skip
        # The steady round found evicted what round 1 had seen; every other record verified.
        found = table.client.get(keys.node_image(images[-1].repository, images[-1].digest, nodes[1])) or {}
        held = table.client.get(keys.node_image(images[0].repository, images[0].digest, nodes[2])) or {}
        assert found.get("state") == "evicted" and held.get("verified_at") and held.get("state") == "present", (
            found,
            held,
        )
    return {
        "nodes": INGEST_NODES, "images": INGEST_IMAGES, "events": 2 * INGEST_NODES,
        "verified_records": INGEST_NODES * INGEST_IMAGES, "absent_every": ABSENT_EVERY, "batch": BATCH,
        "rounds": rounds,
    }  # fmt: skip


def run() -> dict[str, Any]:
    measured = calls_per_round()
    figures, details = measured["figures"], measured["details"]
    details["ingest"] = ingest()
    steady = details["ingest"]["rounds"]["steady"]
    figures["inventory_ingest_events_per_second"] = steady["events_per_second"]
    figures["inventory_requests_per_event"] = steady["dynamodb_requests_per_event"]
    save("inventory", figures, details)
    return {**figures, **details}


main = main_of(run)


if __name__ == "__main__":
    sys.exit(main())
