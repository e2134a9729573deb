"""RolloutEventsFunction on the local stack: a push to a cluster of simulated nodes ends with one
`Image Prefetch Rollout Completed` event on the default bus, that a rule with the documented
pattern delivers to a queue; duplicates of SSM's command event emit nothing; an early command
event is retried until the audit table caught up; failures are counted and grouped."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any

import jsonschema
import pytest

from devtools.local_stack import ssm_agent
from devtools.local_stack.lambda_runtime import SqsEventSource
from devtools.local_stack.node_simulator import SimulatedNodes
from devtools.local_stack.ssm_agent import Report
from tests.helpers import ROOT, load_event
from tests.integration.simulated_fleet import IMAGE, PUSH, SimulatedFleet

SCHEMA = json.loads((ROOT / "docs" / "rollout-event.schema.json").read_text())
# The pattern docs/rollout-events.md tells a pipeline to match.
PATTERN = {"source": ["eks-image-prefetcher"], "detail-type": ["Image Prefetch Rollout Completed"],
           "detail": {"cluster": ["ml-prod"]}}  # fmt: skip
REASON = "pull failed: 401 Unauthorized from the registry"


def subscribe(stack: Any, pattern: dict[str, Any] = PATTERN) -> str:
    """A pipeline's rule on the default bus with `pattern`, its target a queue: the queue's URL."""
    url: str = stack.queue_rule(f"{stack.name}-pipeline", pattern)
    return url


def received(stack: Any, url: str) -> list[dict[str, Any]]:
    sqs = stack.client("sqs")
    found = []
    while True:
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])
        if not messages:
            return found
        for message in messages:
            found.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])


def rollout_source(stack: Any) -> SqsEventSource:
    (source,) = [
        s for s in stack.sources if isinstance(s, SqsEventSource) and s.function.logical_id == "RolloutEventsFunction"
    ]
    return source


class FailingOn:
    """Simulated nodes where one node's pull fails with the registry's answer."""

    def __init__(self, failing: str) -> None:
        self.nodes = SimulatedNodes()
        self.failing = failing

    def __call__(self, instance_id: str, parameters: dict[str, str]) -> Report:
        if instance_id != self.failing:
            return self.nodes(instance_id, parameters)
        now = datetime.now(UTC)
        line = json.dumps({"image": IMAGE.pinned, "digest": IMAGE.digest, "tag": IMAGE.tag, "outcome": "failed",
                           "bytes": 0, "seconds": 1.0, "error": REASON}, separators=(",", ":"))  # fmt: skip
        return ssm_agent.report(ssm_agent.ScriptExit(1, line + "\n", REASON + "\n", now, now))


def test_a_push_ends_with_one_rollout_event_that_a_pipelines_rule_receives(stack):
    # Given three nodes of ml-prod that pull (simulated) and a pipeline's rule with the
    # documented pattern, targeting a queue
    fleet = SimulatedFleet(stack)
    nodes = fleet.launch(3)
    pipeline = subscribe(stack)
    # When the image is pushed and every node ran the command
    fleet.push()
    # Then SSM's command event went out once, and the queue holds exactly one rollout event
    assert [e["detail"]["status"] for e in fleet.simulator.command_events] == ["Success"]
    (event,) = received(stack, pipeline)
    # valid against the documented schema
    jsonschema.Draft202012Validator(SCHEMA).validate(event)
    detail = event["detail"]
    # and naming the image, the cluster and the command
    assert detail["image"] == f"{IMAGE.registry}/{IMAGE.repository}@{IMAGE.digest}"
    assert (detail["repository"], detail["digest"], detail["tag"]) == (IMAGE.repository, IMAGE.digest, "v1.4.0")
    assert detail["cluster"] == "ml-prod"
    assert detail["command-id"] == fleet.simulator.command_events[0]["detail"]["command-id"]
    assert detail["command-status"] == "Success"
    # with every node counted, and the cluster's coverage
    assert detail["nodes"] == {"targeted": 3, "recorded": 3, "not-recorded": 0, "by-state": {"cached": 3}}
    assert detail["complete"] is True
    assert detail["coverage"] == {"live-nodes": 3, "holding": 3, "percent": 100.0}
    assert detail["time-to-cached-seconds"]["count"] == 3
    assert detail["time-to-cached-seconds"]["p50"] is not None
    assert detail["failures"] == []
    assert {r.instance_id for r in fleet.table.queries.image(IMAGE.repository, IMAGE.digest)[1]} == set(nodes)
    # And the rollout queue is empty (nothing left to retry, nothing in its dead-letter queue)
    assert stack.queue_depth("RolloutQueue") == 0
    assert stack.queue_depth("RolloutDLQ") == 0


def test_the_same_command_event_delivered_again_emits_nothing_more(stack):
    # Given a push whose rollout event was put
    fleet = SimulatedFleet(stack)
    fleet.launch(2)
    pipeline = subscribe(stack)
    fleet.push()
    assert len(received(stack, pipeline)) == 1
    # When SSM's command event is delivered again (EventBridge is at least once; a new event id)
    (command_event,) = fleet.simulator.command_events
    stack.put_events(copy.deepcopy(command_event))
    fleet.run()
    # Then no second rollout event reaches the pipeline
    assert received(stack, pipeline) == []
    assert stack.queue_depth("RolloutQueue") == 0


def test_a_command_event_before_its_invocations_are_audited_is_retried_then_correct(stack):
    # Given two nodes that ran the pushed command: their invocation events and the command's
    # event are on the queues, and the audit function has not applied any yet
    fleet = SimulatedFleet(stack)
    fleet.launch(2)
    pipeline = subscribe(stack)
    stack.functions["ImagePushFunction"].invoke(copy.deepcopy(PUSH))
    fleet.simulator.step()
    assert len(fleet.simulator.command_events) == 1
    # When the rollout function gets the command's event first
    assert rollout_source(stack).poll_once() == 1
    # Then it put nothing, and the event is back in its queue for a retry
    assert received(stack, pipeline) == []
    assert stack.queue_depth("RolloutQueue") == 1
    # When the audit catches up and the queue hands the event back
    fleet.run()
    # Then one rollout event, with both nodes counted
    (event,) = received(stack, pipeline)
    assert event["detail"]["nodes"]["by-state"] == {"cached": 2}
    assert event["detail"]["nodes"]["not-recorded"] == 0
    assert stack.queue_depth("RolloutQueue") == 0


def test_a_failed_node_shows_in_the_counts_and_the_grouped_reasons(stack):
    # Given three nodes, the last of which (in SSM's order) fails to pull with the registry's answer
    fleet = SimulatedFleet(stack)
    nodes = sorted(fleet.launch(3))
    fleet.simulator.runner = FailingOn(nodes[-1])
    pipeline = subscribe(stack)
    # When the image is pushed and the command ends
    fleet.push()
    # Then the one rollout event says Failed, counts the failed node and groups its reason
    (event,) = received(stack, pipeline)
    jsonschema.Draft202012Validator(SCHEMA).validate(event)
    detail = event["detail"]
    assert detail["command-status"] == "Failed"
    assert detail["nodes"]["by-state"] == {"cached": 2, "failed": 1}
    assert detail["failures"] == [{"state": "failed", "reason": REASON, "count": 1}]
    assert detail["coverage"] == {"live-nodes": 3, "holding": 2, "percent": 66.7}
    assert detail["time-to-cached-seconds"]["count"] == 2


@pytest.mark.parametrize("cluster", ["ml-batch"])
def test_the_documented_pattern_filters_on_the_cluster(stack, cluster):
    # Given a pipeline's rule for another cluster than the one the nodes are in
    fleet = SimulatedFleet(stack)
    fleet.launch(2)
    pipeline = subscribe(
        stack, {**PATTERN, "detail": {"cluster": [cluster], "coverage": {"percent": [{"numeric": [">=", 95]}]}}}
    )
    # When ml-prod's rollout ends
    fleet.push()
    # Then that rule received nothing (ml-batch has no node, so its command never ends here)
    assert received(stack, pipeline) == []


def test_the_sqs_sample_with_a_duplicate_puts_one_event_for_a_recorded_push_command(stack):
    # Given the sample command event's command, recorded as a push to ml-prod with no node
    from prefetcher.store import AuditTable
    from prefetcher.store.commands import CommandRecord

    sample = load_event("ssm-command-success.json")
    table = AuditTable(stack.output("AuditTable"))
    table.commands.record(
        CommandRecord(
            sample["detail"]["command-id"], "push", "ml-prod", (IMAGE,), datetime(2026, 11, 29, 10, 15, 1, tzinfo=UTC)
        )
    )
    pipeline = subscribe(stack)
    # When the SQS-wrapped sample (the same event twice) reaches the function, on our document
    batch = load_event("sqs-ssm-command-success.json")
    for record in batch["Records"]:
        body = json.loads(record["body"])
        body["detail"]["document-name"] = stack.output("PrefetchDocument")
        record["body"] = json.dumps(body)
    answer = stack.functions["RolloutEventsFunction"].invoke(batch)
    # Then neither record failed (SSM no longer knows that command: nothing to wait for) and one
    # event went out
    assert answer == {"batchItemFailures": []}
    (event,) = received(stack, pipeline)
    assert event["detail"]["nodes"]["targeted"] is None
    assert event["detail"]["coverage"]["live-nodes"] == 0


def test_a_command_the_service_ended_on_its_own_emits_one_command_event_and_one_rollout_event(stack):
    # Given a self-managed node without the eks:cluster-name tag: SSM resolves it by the
    # cluster's tag target, and the sender's policy does not allow it (Access Denied, ended by the
    # service at once, no agent run)
    from devtools.local_stack import iam
    from devtools.local_stack.ec2_fleet import NodeSpec, launch

    fleet = SimulatedFleet(stack)
    (node,) = launch(stack.client("ec2"), NodeSpec("ml-prod", "self-managed", "workers"), 1)
    pipeline = subscribe(stack)
    # When the image is pushed
    with iam.expect_denied("ssm:SendCommand", f"*instance/{node}"):
        fleet.push()
    # Then the command's end went out once, after the service ended its invocation
    assert [(e["detail"]["status"], e["resources"]) for e in fleet.simulator.command_events] == [("Failed", [])]
    # and one rollout event says why the node did not get the image
    (event,) = received(stack, pipeline)
    assert event["detail"]["nodes"]["by-state"] == {"failed": 1}
    (failure,) = event["detail"]["failures"]
    assert failure["state"] == "failed"
    assert failure["reason"].startswith("access denied: the stack's IAM policy does not allow SendCommand")
