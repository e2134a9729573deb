"""A rollout as Run Command runs it: at most MaxConcurrency nodes at a time, the command expiring
TimeoutSeconds + executionTimeout after it is sent (a node not started by TimeoutSeconds is
Delivery Timed Out), and no more nodes started once more than MaxErrors failed. Time in a rollout
is simulated (devtools/local_stack/moto_patches.py), so hours of pulls take a second here."""

from __future__ import annotations

import copy
from datetime import UTC, datetime

import pytest
from prefetcher.store import AuditTable

from devtools.local_stack import moto_patches, ssm_agent
from devtools.local_stack.ec2_fleet import NodeSpec, launch
from devtools.local_stack.node_simulator import NodeSimulator, simulated_agent
from tests.helpers import load_event, moto_commands

PUSH = load_event("ecr-push-tagged.json")
DIGEST = PUSH["detail"]["image-digest"]


def simulator(stack, runner) -> NodeSimulator:
    return NodeSimulator(stack.put_events, "123456789012", "us-east-1", stack.output("PrefetchDocument"), runner)


def states(stack) -> dict[str, str]:
    _, records = AuditTable(stack.output("AuditTable")).queries.image("ml/trainer", DIGEST)
    return {r.instance_id: r.state for r in records}


def test_a_rollout_in_ten_turns_reaches_every_node_before_the_command_expires(stack):
    # Given 20 nodes, MaxConcurrency 10% (2 at a time: 10 turns) and pulls of 15 minutes each,
    # with the defaults DeliveryTimeoutSeconds 600 and ExecutionTimeoutSeconds 3600
    nodes = launch(stack.client("ec2"), NodeSpec("ml-prod", "managed", "general"), 20)
    # When an image is pushed and every node runs the agent in its turn
    stack.functions["ImagePushFunction"].invoke(copy.deepcopy(PUSH))
    stack.run_sources(between=simulator(stack, simulated_agent(seconds=900)).step)
    # Then the command's lifetime covered every turn (600 s to start, plus 9 turns of up to
    # 3600 s), so the last turn (starting 2 h 15 min after the send) ran too: every node is
    # cached, none "undeliverable" (with TimeoutSeconds 600, 18 of the 20 were)
    (command,) = [c for c in moto_commands() if set(nodes) & set(c.instance_ids)]
    assert command.timeout_seconds == 600 + 9 * 3600
    rollout = moto_patches.rollout(command.command_id)
    assert rollout.most_at_once() == 2
    assert max(begin for begin, _ in rollout.runs) == 9 * 900
    assert states(stack) == dict.fromkeys(nodes, "cached")


def send(stack, nodes, **kwargs):
    ssm = stack.client("ssm")
    item = f"123456789012.dkr.ecr.us-east-1.amazonaws.com/ml/trainer:v1.4.0@{DIGEST}"
    return ssm.send_command(
        DocumentName=stack.output("PrefetchDocument"), InstanceIds=nodes, Parameters={"Images": [item]}, **kwargs
    )["Command"]


def ended(stack, command_id: str, nodes: list[str]) -> dict[str, tuple[str, str]]:
    ssm = stack.client("ssm")
    found = {}
    for node in nodes:
        answer = ssm.get_command_invocation(CommandId=command_id, InstanceId=node)
        found[node] = (answer["Status"], answer["StatusDetails"])
    return found


def test_a_node_whose_turn_comes_after_the_delivery_timeout_is_delivery_timed_out(stack):
    # Given 6 nodes, 2 at a time, runs of 600 s and a TimeoutSeconds of 1,000 s
    nodes = sorted(launch(stack.client("ec2"), NodeSpec("ml-prod", "managed", "general"), 6))
    command = send(stack, nodes, MaxConcurrency="2", MaxErrors="100%", TimeoutSeconds=1000)
    handled = simulator(stack, simulated_agent(seconds=600))
    handled.step()
    # Then the third turn (starting at 1,200 s) never ran: SSM ended it, and said so in events
    outcome = ended(stack, command["CommandId"], nodes)
    assert sorted(outcome.values()) == [("Success", "Success")] * 4 + [("TimedOut", "Delivery Timed Out")] * 2
    assert sorted(status for _, _, status in handled.handled).count("TimedOut") == 2


def failing_agent(seconds: float):
    def run(instance_id: str, parameters: dict[str, str]) -> ssm_agent.Report:
        now = datetime.now(UTC)
        done = ssm_agent.ScriptExit(1, '{"fatal":"a stand-in that fails"}\n', "", now, now)
        return ssm_agent.report(done, simulated_seconds=seconds)

    return run


def test_past_max_errors_the_nodes_not_started_are_terminated(stack):
    # Given 5 nodes, one at a time, MaxErrors 1, and an agent that fails everywhere
    nodes = sorted(launch(stack.client("ec2"), NodeSpec("ml-prod", "managed", "general"), 5))
    command = send(stack, nodes, MaxConcurrency="1", MaxErrors="1", TimeoutSeconds=100_000)
    simulator(stack, failing_agent(60)).step()
    # Then after the second failure the rollout stopped: the others never ran
    outcome = ended(stack, command["CommandId"], nodes)
    assert sorted(outcome.values()) == [("Failed", "Failed")] * 2 + [("Failed", "Terminated")] * 3


@pytest.mark.parametrize("stack", [{"MaxConcurrency": "2"}], indirect=True)
def test_with_a_number_for_max_concurrency_the_rollouts_nodes_are_counted(stack):
    # Given 7 nodes in ml-prod and MaxConcurrency 2 (4 turns)
    launch(stack.client("ec2"), NodeSpec("ml-prod", "managed", "general"), 7)
    stack.functions["ImagePushFunction"].invoke(copy.deepcopy(PUSH))
    by_cluster = {c.targets[0]["Key"].rsplit("/", 1)[1]: c for c in moto_commands()}
    # Then the command's lifetime covers 4 turns; the cluster without nodes gets one turn
    assert by_cluster["ml-prod"].timeout_seconds == 600 + 3 * 3600
    assert by_cluster["ml-batch"].timeout_seconds == 600
