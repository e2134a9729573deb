"""NodeJoinFunction on the local stack: EC2 state changes through the node-join rule and queue,
SSM agents that register late (or never), nodes leaving, and pushes racing joins."""

from __future__ import annotations

import copy
import json
import time
import uuid
from datetime import UTC, datetime

import pytest
from prefetcher.errors import TransientError
from prefetcher.store import AuditTable
from prefetcher.store.catalog import Catalog

from devtools.local_stack import iam, moto_patches
from devtools.local_stack.aws_calls import hooked_clients
from devtools.local_stack.ec2_fleet import NodeSpec, launch
from devtools.local_stack.lambda_runtime import sqs_event
from devtools.local_stack.node_simulator import NodeSimulator, simulated_agent
from tests.helpers import CallCounter, load_event, moto_commands

PUSH = load_event("ecr-push-tagged.json")
DIGEST = PUSH["detail"]["image-digest"]
NEWER = "sha256:" + "b" * 64
FAST_RETRIES = {"NodeJoinFunction": {"JOIN_RETRY_DELAYS": "1"}}


@pytest.fixture
def join_stack(servers, aws_env, function_log, request):
    from devtools.local_stack.stack import LocalStack

    servers.reset_moto()
    extra = getattr(request, "param", {}) or {}
    env = {"NodeJoinFunction": {**FAST_RETRIES["NodeJoinFunction"], **extra}}
    return LocalStack(
        servers, name=f"j{datetime.now(UTC):%H%M%S%f}", overrides={"TargetClusters": "ml-prod,ml-batch"},
        log=function_log, visibility_timeout=1, extra_env=env,
    ).deploy()  # fmt: skip


def state_event(instance_id: str, state: str, time: str | None = None) -> dict:
    event = copy.deepcopy(load_event("ec2-running.json"))
    event["id"] = str(uuid.uuid4())
    event["detail"] = {"instance-id": instance_id, "state": state}
    event["resources"] = [f"arn:aws:ec2:us-east-1:123456789012:instance/{instance_id}"]
    event["time"] = time or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return event


def simulator(stack) -> NodeSimulator:
    return NodeSimulator(stack.put_events, "123456789012", "us-east-1", stack.output("PrefetchDocument"),
                         simulated_agent({"ml/trainer": 1000}))  # fmt: skip


def pushed(stack, digest: str = DIGEST, time: str = "2026-11-29T10:15:00Z", event_id: str | None = None) -> None:
    event = copy.deepcopy(PUSH)
    event["detail"]["image-digest"] = digest
    event["time"] = time
    if event_id:
        event["id"] = event_id
    stack.functions["ImagePushFunction"].invoke(event)


def test_a_node_whose_agent_registers_late_is_retried_then_warmed(join_stack, monkeypatch):
    from prefetcher import ssm
    from prefetcher.errors import NodeNotReachableError

    stack = join_stack
    table = AuditTable(stack.output("AuditTable"))
    pushed(stack)
    # Given a new node of ml-prod whose SSM agent has not registered yet
    (instance,) = launch(stack.client("ec2"), NodeSpec("ml-prod", "karpenter", "gpu"))
    moto_patches.set_agent_registered(instance, False)
    refused = {"n": 0}
    send_pull = ssm.send_pull

    def counting(*args, **kwargs):
        try:
            return send_pull(*args, **kwargs)
        except NodeNotReachableError:
            refused["n"] += 1
            raise

    monkeypatch.setattr(ssm, "send_pull", counting)
    sim = simulator(stack)

    def between() -> int:
        if refused["n"] >= 2:  # the agent registers after two refused tries
            moto_patches.set_agent_registered(instance, True)
        return sim.step()

    # When it starts (its running event goes through the node-join rule and queue)
    stack.put_events(state_event(instance, "running"))
    stack.run_sources(timeout=60, between=between)
    # Then the first tries were refused and retried, and once reachable it got the cluster's images
    assert refused["n"] == 2
    node, images = table.queries.node(instance)
    assert node.node_state == "warm" and node.cluster == "ml-prod" and node.node_group == "gpu"
    assert [(i.digest, i.state) for i in images] == [(DIGEST, "cached")]
    assert node.warm_at >= node.joined_at and float(node.warm_seconds) > 0
    joins = [c for c in moto_commands() if c.instance_ids == [instance]]
    assert len(joins) == 1 and joins[0].parameters["Images"][0].endswith(f"ml/trainer:v1.4.0@{DIGEST}")


@pytest.mark.parametrize("join_stack", [{"JOIN_MAX_ATTEMPTS": "3"}], indirect=True)
def test_past_the_bound_the_event_is_dead_lettered_and_the_node_recorded_undeliverable(join_stack):
    # Given a node whose SSM agent never registers
    stack = join_stack
    table = AuditTable(stack.output("AuditTable"))
    pushed(stack)
    (instance,) = launch(stack.client("ec2"), NodeSpec("ml-prod", "managed", "general"))
    moto_patches.set_agent_registered(instance, False)  # never registers
    # When it starts and its event is tried up to the bound (3)
    stack.put_events(state_event(instance, "running"))
    stack.run_sources(timeout=60)
    # Then the node and its image are recorded undeliverable, and the event is kept with why
    node, images = table.queries.node(instance)
    assert node.node_state == "undeliverable"
    assert "did not register within 3 tries" in node.reason
    assert [(i.state, "did not register" in i.reason) for i in images] == [("undeliverable", True)]
    messages = stack.client("sqs").receive_message(QueueUrl=stack.queues["NodeJoinDLQ"], MessageAttributeNames=["All"])[
        "Messages"
    ]
    assert len(messages) == 1
    assert messages[0]["MessageAttributes"]["ErrorType"]["StringValue"] == "NodeUndeliverable"
    assert "did not register" in messages[0]["MessageAttributes"]["ErrorMessage"]["StringValue"]
    assert json.loads(messages[0]["Body"])["detail"]["instance-id"] == instance
    assert stack.queue_depth("NodeJoinQueue") == 0


def test_a_terminated_node_leaves_coverage(join_stack, capsys):
    from prefetcher_cli import main as cli

    # Given two warm nodes of ml-prod
    stack = join_stack
    pushed(stack)
    instances = launch(stack.client("ec2"), NodeSpec("ml-prod", "managed", "general"), 2)
    stack.put_events(*(state_event(i, "running") for i in instances))
    stack.run_sources(timeout=60, between=simulator(stack).step)
    # When one of them terminates
    stack.put_events(state_event(instances[0], "terminated", time="2099-01-01T00:00:00Z"))
    stack.run_sources(timeout=60)
    # Then coverage counts only the other, and the node is recorded as left
    capsys.readouterr()
    cli.main(["coverage", "--cluster", "ml-prod", "--output", "json", "--table", stack.output("AuditTable")])
    (cluster,) = json.loads(capsys.readouterr().out)["clusters"]
    assert cluster["nodes"] == 1
    assert [(i["holding"], i["nodes"]) for i in cluster["images"]] == [(1, 1)]
    node, _ = AuditTable(stack.output("AuditTable")).queries.node(instances[0])
    assert node.node_state == "left" and node.left_at.startswith("2099-01-01")


def test_nodes_of_other_clusters_and_plain_instances_are_ignored(join_stack):
    stack = join_stack
    pushed(stack)
    ec2 = stack.client("ec2")
    (other,) = launch(ec2, NodeSpec("web", "managed", "frontend"))
    plain = ec2.run_instances(
        ImageId=ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"], MinCount=1, MaxCount=1
    )
    plain_id = plain["Instances"][0]["InstanceId"]
    before = len(moto_commands())
    result = stack.functions["NodeJoinFunction"].invoke(sqs_event(
        [{"MessageId": f"m{i}", "ReceiptHandle": "r", "Body": json.dumps(state_event(x, "running")), "Attributes": {}}
         for i, x in enumerate((other, plain_id))], "arn:aws:sqs:us-east-1:123456789012:q", "us-east-1"))  # fmt: skip
    assert result == {"batchItemFailures": []}
    assert len(moto_commands()) == before


def test_a_batch_of_100_join_events_makes_one_describe_instances_call(join_stack):
    stack = join_stack
    pushed(stack)
    instances = launch(stack.client("ec2"), NodeSpec("ml-prod", "managed", "general"), 100)
    records = [
        {"MessageId": f"m{n}", "ReceiptHandle": "r", "Body": json.dumps(state_event(i, "running")),
         "Attributes": {"ApproximateReceiveCount": "1"}}
        for n, i in enumerate(instances)
    ]  # fmt: skip
    with CallCounter() as counter:
        result = stack.functions["NodeJoinFunction"].invoke(
            sqs_event(records, "arn:aws:sqs:us-east-1:123456789012:q", "us-east-1")
        )
    assert result == {"batchItemFailures": []}
    assert counter.count("ec2.DescribeInstances") == 1
    assert counter.count("ssm.SendCommand") == 100


def test_a_push_while_the_node_is_still_joining_reaches_it_with_the_newest_digest(join_stack):
    # Given a node starting before its SSM agent registers
    stack = join_stack
    table = AuditTable(stack.output("AuditTable"))
    pushed(stack)
    (instance,) = launch(stack.client("ec2"), NodeSpec("ml-prod", "managed", "general"))
    moto_patches.set_agent_registered(instance, False)
    stack.put_events(state_event(instance, "running"))
    # When the join's first try fails (agent not registered); meanwhile a newer digest is pushed,
    # whose command cannot reach the node either; then the agent registers
    (join_source,) = [s for s in stack.sources if s.function.logical_id == "NodeJoinFunction"]
    assert join_source.poll_once() == 1
    pushed(stack, NEWER, "2026-11-29T11:00:00Z", "9e8d7c6b-5a49-4382-9170-6f5e4d3c2b1a")
    assert all(instance not in c.instance_ids for c in moto_commands())
    moto_patches.set_agent_registered(instance, True)
    stack.run_sources(timeout=60, between=simulator(stack).step)
    # Then the node got the newest digest
    _, images = table.queries.node(instance)
    assert {i.digest: i.state for i in images} == {NEWER: "cached"}


def test_a_node_joining_while_a_push_is_in_flight_ends_with_the_newest_digest(join_stack, monkeypatch):
    # Given a node whose agent is not registered yet, and a push that lands right after its
    # join read the catalog
    stack = join_stack
    table = AuditTable(stack.output("AuditTable"))
    pushed(stack)
    (instance,) = launch(stack.client("ec2"), NodeSpec("ml-prod", "managed", "general"))
    moto_patches.set_agent_registered(instance, False)
    original = Catalog.current_images
    calls = {"n": 0}

    def racing(self: Catalog, cluster: str):
        found = original(self, cluster)
        calls["n"] += 1
        if calls["n"] == 1:
            # Right after the join read the catalog: a push records a newer digest and sends it
            # while the node is not registered yet (SSM does not target it); then it registers.
            pushed(stack, NEWER, "2026-11-29T11:00:00Z", "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d")
            moto_patches.set_agent_registered(instance, True)
        return found

    monkeypatch.setattr(Catalog, "current_images", racing)
    # When the node starts
    stack.put_events(state_event(instance, "running"))
    stack.run_sources(timeout=60, between=simulator(stack).step)
    # Then it ends with the newest digest, sent to it by the join (not by the push's tag target)
    _, images = table.queries.node(instance)
    states = {i.digest: i.state for i in images}
    assert states[NEWER] == "cached"
    assert all(instance not in c.instance_ids for c in moto_commands() if c.targets)


# ---- a full batch within the function's time ---------------------------------------------------

# The design point (docs/scale.md): every AWS call at 1 s (throttled and retried, 10 to 20 times
# its usual latency). Played at a tenth of the time: each call 0.1 s, the function's Timeout a
# tenth of the template's.
SCALE = 0.1
DESIGN_LATENCY = 1.0


def slow_calls(seconds: float):
    """Every AWS call the functions make in the block takes `seconds` longer."""

    def attach(_service, client):
        client.meta.events.register("before-send", lambda **_: time.sleep(seconds))

    return hooked_clients(attach)


def batch_size(stack, function_id: str) -> int:
    events = stack.stack.resources[function_id]["Properties"]["Events"]
    (sqs,) = [e for e in events.values() if e["Type"] == "SQS"]
    return int(sqs["Properties"]["BatchSize"])


def test_a_full_batch_of_joins_at_the_design_latency_ends_within_the_functions_timeout(join_stack):
    stack = join_stack
    pushed(stack)
    # Given as many nodes joining as one batch holds
    size = batch_size(stack, "NodeJoinFunction")
    instances = launch(stack.client("ec2"), NodeSpec("ml-prod", "managed", "general"), size)
    records = [
        {"MessageId": f"m{n}", "ReceiptHandle": "r", "Body": json.dumps(state_event(i, "running")),
         "Attributes": {"ApproximateReceiveCount": "1"}}
        for n, i in enumerate(instances)
    ]  # fmt: skip
    function = stack.functions["NodeJoinFunction"]
    function.timeout_seconds = function.enforced_timeout_seconds = function.timeout * SCALE
    # When they arrive in one batch and every AWS call is slow
    with slow_calls(DESIGN_LATENCY * SCALE):
        started = time.monotonic()
        result = function.invoke(sqs_event(records, "arn:aws:sqs:us-east-1:123456789012:q", "us-east-1"))
        took = time.monotonic() - started
        print(f"join batch of {size} at {DESIGN_LATENCY * SCALE} s a call: {took:.2f} s")
    # Then the invocation ends within its Timeout (the local runtime stops it there, as Lambda
    # does) and every node got its command
    assert result == {"batchItemFailures": []}
    assert took < function.timeout * SCALE
    assert {i for c in moto_commands() for i in c.instance_ids if c.instance_ids and not c.targets} == set(instances)


def test_an_event_failing_on_its_last_receive_is_recorded_and_kept_with_its_reason(join_stack, monkeypatch):
    from prefetcher import ssm

    stack = join_stack
    table = AuditTable(stack.output("AuditTable"))
    pushed(stack)
    (instance,) = launch(stack.client("ec2"), NodeSpec("ml-prod", "managed", "general"))

    def throttled(*_args, **_kwargs):
        raise TransientError("SendCommand failed after 5 tries (ThrottlingException): Rate exceeded")

    monkeypatch.setattr(ssm, "send_pull", throttled)
    # Given a node's event on its last receive (maxReceiveCount 8), and SSM throttling every try
    record = {"MessageId": "m1", "ReceiptHandle": "r", "Body": json.dumps(state_event(instance, "running")),
              "Attributes": {"ApproximateReceiveCount": "8"}}  # fmt: skip
    # When it fails once more
    result = stack.functions["NodeJoinFunction"].invoke(
        sqs_event([record], "arn:aws:sqs:us-east-1:123456789012:q", "us-east-1")
    )
    # Then it does not go to the dead-letter queue by the redrive policy with no word of why: the
    # node is recorded with the reason, and the event is kept in NodeJoinDLQ with it
    assert result == {"batchItemFailures": []}
    node, _ = table.queries.node(instance)
    assert node.node_state == "failed" and "Rate exceeded" in node.reason
    (kept,) = stack.client("sqs").receive_message(QueueUrl=stack.queues["NodeJoinDLQ"], MessageAttributeNames=["All"])[
        "Messages"
    ]
    assert kept["MessageAttributes"]["ErrorType"]["StringValue"] == "NodeEventFailed"
    assert "not applied after 8 receives" in kept["MessageAttributes"]["ErrorMessage"]["StringValue"]


# ---- a node the policy does not allow -------------------------------------------------------------


def test_a_node_the_policy_does_not_allow_is_recorded_failed_at_once_and_warmed_once_tagged(join_stack):
    stack = join_stack
    table = AuditTable(stack.output("AuditTable"))
    pushed(stack)
    # Given a self-managed node of ml-prod: only kubernetes.io/cluster/ml-prod, no EKS tag
    ec2 = stack.client("ec2")
    (instance,) = launch(ec2, NodeSpec("ml-prod", "self-managed", "asg-1"))
    # When it starts (SendCommand by InstanceIds: IAM refuses it, as AWS does)
    with iam.expect_denied("ssm:SendCommand", f"*:instance/{instance}"):
        stack.put_events(state_event(instance, "running"))
        stack.run_sources(timeout=60)
    # Then it is recorded failed at once (one try), with the tag it lacks
    node, images = table.queries.node(instance)
    assert node.node_state == "failed"
    assert "eks:cluster-name=ml-prod" in node.reason and "has neither tag" in node.reason
    assert [(i.state, "eks:cluster-name=ml-prod" in i.reason) for i in images] == [("failed", True)]
    assert [c for c in moto_commands() if instance in c.instance_ids] == []
    assert stack.queue_depth("NodeJoinQueue") == 0
    assert stack.queue_depth("NodeJoinDLQ") == 1
    # And once the node is tagged, redriving its event warms it
    ec2.create_tags(Resources=[instance], Tags=[{"Key": "eks:cluster-name", "Value": "ml-prod"}])
    from prefetcher_cli import main as cli

    assert cli.main(["redrive", stack.queues["NodeJoinDLQ"]]) == 0
    stack.run_sources(timeout=60, between=simulator(stack).step)
    node, images = table.queries.node(instance)
    assert node.node_state == "warm"
    assert [i.state for i in images] == ["cached"]


def test_a_node_joining_a_cluster_of_many_long_named_images_gets_commands_whose_output_fits(join_stack):
    from prefetcher.refs import ImageRef

    stack = join_stack
    table = AuditTable(stack.output("AuditTable"))
    # Given 50 current images of ml-prod with long names (one command for all could print more
    # than the SSM agent keeps of its output: 24,000 characters)
    registry = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
    images = [
        ImageRef(
            registry, f"ml/{n:02d}-" + "model-weights-" * 14 + "x", "sha256:" + f"{n:064x}", "v" + "1.0.0-rc." * 10
        )
        for n in range(50)
    ]
    for n, image in enumerate(images):
        table.catalog.record_push(
            image, ("ml-prod",), pushed_at=datetime(2026, 11, 29, 10, n, tzinfo=UTC), event_id=f"e{n}"
        )
    (instance,) = launch(stack.client("ec2"), NodeSpec("ml-prod", "managed", "general"))
    # When the node joins
    stack.put_events(state_event(instance, "running"))
    stack.run_sources(timeout=60, between=simulator(stack).step)
    # Then it got them in several commands, and every image is recorded cached (none lost past a cut)
    sent = [c for c in moto_commands() if c.instance_ids == [instance]]
    assert len(sent) >= 2
    _, records = table.queries.node(instance)
    assert sorted(r.state for r in records) == ["cached"] * 50
    node, _ = table.queries.node(instance)
    assert node.node_state == "warm"
    # And each command's worst-case output fits in what the agent keeps, which one for all would not
    from prefetcher import commands

    assert sum(commands.line_bound(i) for i in images) > commands.STDOUT_LIMIT
    for command in sent:
        chunk = [ImageRef.parse_agent_item(item) for item in command.parameters["Images"][0].split(",")]
        assert sum(commands.line_bound(i) for i in chunk) <= commands.BUDGET
