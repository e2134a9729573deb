"""FleetCheckFunction on the local stack (issue 12): the schedule rule's event and the operator's
request through FleetCheckQueue; the catch-up of nodes lacking a current image, its budget and
`given-up`; a replayed schedule event; an evicted image pulled again; a node terminated without
its event leaving coverage; `prefetcher verify`; a malformed event in FleetCheckDLQ."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from prefetcher.refs import ImageRef
from prefetcher.store import keys
from prefetcher_cli import main as cli

from devtools.local_stack import moto_patches, ssm_agent
from devtools.local_stack.node_simulator import Report, SimulatedNodes
from tests.helpers import moto_commands
from tests.integration.simulated_fleet import IMAGE, SCHEDULE, SIZES, SimulatedFleet, cli_json


class FailingNodes(SimulatedNodes):
    """Simulated agents; the nodes in `failing` fail every pull, with the registry's answer."""

    def __init__(self, failing: set[str]) -> None:
        super().__init__(sizes=SIZES)
        self.failing = failing

    def __call__(self, instance_id: str, parameters: dict[str, str]) -> Report:
        if instance_id not in self.failing or parameters.get("Mode", "pull") == "inventory":
            return super().__call__(instance_id, parameters)
        now = datetime.now(UTC)
        lines = [
            json.dumps({"image": i.pinned, "digest": i.digest, "tag": i.tag, "outcome": "failed", "bytes": 0,
                        "seconds": 0.1, "error": "pull failed: 403 Forbidden from the registry", "pinned": False})
            for i in (ImageRef.parse_agent_item(item) for item in parameters["Images"].split(","))
        ]  # fmt: skip
        return ssm_agent.report(ssm_agent.ScriptExit(1, "\n".join(lines) + "\n", "", now, now))


def catch_ups(fleet: SimulatedFleet) -> list:
    return [c for c in moto_commands() if "catch-up of" in (c.comment or "")]


def test_a_node_unreachable_at_push_time_gets_the_image_at_the_next_fleet_check(stack):
    # Given two nodes of ml-prod, one whose SSM agent is not registered when the image is pushed
    fleet = SimulatedFleet(stack)
    offline, online = fleet.join(2)
    moto_patches.set_agent_registered(offline, False)
    fleet.push()
    assert fleet.record(offline) is None and fleet.record(online).state == "cached"
    # When its agent registers and the scheduled fleet check runs
    moto_patches.set_agent_registered(offline, True)
    fleet.fleet_check()
    # Then the catch-up sent it exactly what it lacked, by InstanceIds, and it holds the image
    (sent,) = catch_ups(fleet)
    assert sent.instance_ids == [offline] and IMAGE.digest in sent.parameters["Images"][0]
    assert fleet.table.commands.get(sent.command_id).kind == "catch-up"
    record = fleet.record(offline)
    assert (record.state, record.holds) == ("cached", True)
    assert fleet.item(offline)["catch_up_attempts"] == 1
    # And the node that had it got nothing but the inventory
    assert fleet.record(online).command_id != sent.command_id and fleet.record(online).verified_at


@pytest.mark.parametrize("stack", [{"CatchUpMaxAttempts": "2", "CatchUpBackoffSeconds": "0"}], indirect=True)
def test_a_node_that_always_fails_stops_at_its_budget_given_up_with_the_reason(stack, capsys):
    # Given a node whose every pull fails (budget: 2 catch-ups)
    failing: set[str] = set()
    fleet = SimulatedFleet(stack, FailingNodes(failing))
    bad, good = fleet.join(2)
    failing.add(bad)
    fleet.push()
    assert fleet.record(bad).state == "failed"
    # When the fleet check runs three times
    for _ in range(3):
        fleet.fleet_check()
    # Then the node got two catch-ups, then none, and its record says given-up with the last reason
    # (the other node may have had one: the push's rollout stops past MaxErrors)
    assert [c.instance_ids for c in catch_ups(fleet) if c.instance_ids == [bad]] == [[bad], [bad]]
    given_up = fleet.record(bad)
    assert (given_up.state, given_up.holds) == ("given-up", False)
    assert "403 Forbidden" in given_up.reason
    # And a fourth check sends nothing more
    before = len(catch_ups(fleet))
    fleet.fleet_check()
    assert len(catch_ups(fleet)) == before and fleet.record(bad).state == "given-up"
    # And `prefetcher failures` shows it
    failures = cli_json(capsys, "failures", "--since", "1h", table=fleet.table.table_name)
    assert [(f["instance_id"], f["state"]) for f in failures["failures"] if f["state"] == "given-up"] == [
        (bad, "given-up")
    ]
    assert fleet.record(good).state == "cached"
    # And `prefetcher coverage` counts it given up
    coverage = cli_json(capsys, "coverage", "--cluster", "ml-prod", table=fleet.table.table_name)
    (image,) = coverage["clusters"][0]["images"]
    assert (image["holding"], image["given_up"]) == (1, 1)


def test_a_replayed_schedule_event_sends_nothing_twice(stack):
    # Given a node that lacks the image, and a schedule event that was handled
    fleet = SimulatedFleet(stack)
    offline, _ = fleet.join(2)
    moto_patches.set_agent_registered(offline, False)
    fleet.push()
    moto_patches.set_agent_registered(offline, True)
    event = fleet.fleet_check()
    sent = len(moto_commands())
    assert len(catch_ups(fleet)) == 1
    # When EventBridge delivers the same event again
    fleet.fleet_check(event)
    # Then no command was sent, neither catch-up nor inventory
    assert len(moto_commands()) == sent
    # And even with its idempotency record gone (a crash before it was saved), the send claims hold
    ddb = stack.client("dynamodb")
    for item in fleet.table.client.query("pk = :pk", {":pk": keys.idempotency_pk("FleetCheckFunction")}):
        ddb.delete_item(TableName=fleet.table.table_name, Key={"pk": {"S": item["pk"]}, "sk": {"S": item["sk"]}})
    fleet.fleet_check(event)
    assert len(moto_commands()) == sent
    assert fleet.item(offline)["catch_up_attempts"] == 1  # the attempt was counted once


def test_an_image_evicted_behind_the_tools_back_is_found_evicted_then_pulled_again(stack, capsys):
    # Given two nodes that pulled the image, and the image removed on one behind the agent's back
    fleet = SimulatedFleet(stack)
    evicted, _ = fleet.join(2)
    fleet.push()
    fleet.nodes.evict(evicted, IMAGE)
    # When the fleet check runs: its inventory finds the image absent
    fleet.fleet_check()
    assert fleet.record(evicted).state == "evicted" and not catch_ups(fleet)
    coverage = cli_json(capsys, "coverage", "--cluster", "ml-prod", table=fleet.table.table_name)
    assert coverage["clusters"][0]["images"][0]["holding"] == 1
    # And the next fleet check catches it up
    fleet.fleet_check()
    (sent,) = catch_ups(fleet)
    assert sent.instance_ids == [evicted]
    assert fleet.record(evicted).state == "cached"
    # Then coverage is back to 100 %
    coverage = cli_json(capsys, "coverage", "--cluster", "ml-prod", table=fleet.table.table_name)
    (image,) = coverage["clusters"][0]["images"]
    assert (image["holding"], image["evicted"]) == (2, 0)


@pytest.mark.parametrize("stack", [{"LeaveCoverageAfterRounds": "2"}], indirect=True)
def test_a_node_terminated_without_its_event_leaves_coverage_after_the_rounds(stack):
    # Given two nodes that pulled the image, and one terminated while its event went to a dead-letter queue
    fleet = SimulatedFleet(stack)
    gone, alive = fleet.join(2)
    fleet.push()
    stack.client("ec2").terminate_instances(InstanceIds=[gone])
    # When the fleet check runs: a first round, then two the node does not answer
    fleet.fleet_check()
    fleet.fleet_check()
    assert {n.instance_id for n in fleet.table.queries.live_nodes("ml-prod")} == {gone, alive}
    fleet.fleet_check()
    # Then the node left coverage (as its terminated event would have done), the other stays
    live = {n.instance_id for n in fleet.table.queries.live_nodes("ml-prod")}
    assert live == {alive}
    node, _ = fleet.table.queries.node(gone)
    assert node.left_at and node.left_because == "terminated"
    assert fleet.record(alive).verified_at


def test_prefetcher_verify_puts_the_documented_event_and_it_reaches_the_function(stack, capsys, monkeypatch):
    # Given two nodes that hold the pushed image
    fleet = SimulatedFleet(stack)
    nodes = fleet.join(2)
    fleet.push()
    # When an operator runs `prefetcher verify --cluster ml-prod --cluster nope`... first the good one
    capsys.readouterr()
    assert cli.main(["verify", "--cluster", "ml-prod"]) == 0
    out = capsys.readouterr().out
    assert "Fleet Check Requested" in out and "prefetcher coverage" in out
    fleet.run()
    # Then the fleet check ran: every node was asked for an inventory and answered
    assert {instance for instance, _ in fleet.nodes.inventories} == set(nodes)
    assert all(fleet.record(n).verified_at for n in nodes)


def test_a_request_for_a_cluster_that_is_not_a_target_is_kept_with_the_reason(stack):
    # Given a request naming a cluster this stack does not serve
    fleet = SimulatedFleet(stack)
    fleet.join(1)
    fleet.push()
    event = {"source": "eks-image-prefetcher", "detail-type": "Fleet Check Requested",
             "detail": {"clusters": ["not-ours"], "requested-by": "tester"}}  # fmt: skip
    # When it goes through the rule
    stack.put_events(event)
    fleet.run()
    # Then it is in FleetCheckDLQ with the reason, and no inventory was sent
    messages = _dead_letters(stack)
    assert len(messages) == 1
    assert "not-ours" in messages[0]["MessageAttributes"]["ErrorMessage"]["StringValue"]
    assert messages[0]["MessageAttributes"]["ErrorType"]["StringValue"] == "UnknownCluster"
    assert not fleet.nodes.inventories


def test_a_malformed_fleet_check_message_lands_in_its_dead_letter_queue_with_the_reason(stack):
    # Given a message on the fleet-check queue that is a schedule event with a forged detail
    event = stack.scheduled_event(SCHEDULE)
    event["detail"] = {"clusters": ["ml-prod; rm -rf /"]}
    # When the function receives it
    stack.fire_schedule(SCHEDULE, event)
    stack.run_sources()
    # Then it is in FleetCheckDLQ with the validation error
    (message,) = _dead_letters(stack)
    reason = message["MessageAttributes"]["ErrorMessage"]["StringValue"]
    assert "detail.clusters" in reason and message["MessageAttributes"]["ErrorType"]["StringValue"] == "InvalidEvent"


def _dead_letters(stack) -> list[dict]:
    answer = stack.client("sqs").receive_message(
        QueueUrl=stack.queues["FleetCheckDLQ"], MaxNumberOfMessages=10, MessageAttributeNames=["All"]
    )
    return list(answer.get("Messages", []))
