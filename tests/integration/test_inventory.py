"""An inventory (document parameter `Mode=inventory`, issue 12) on the local stack: sent to a
cluster by tag targets (verify.send_inventory), answered by simulated nodes that remember what
they hold (node_simulator.SimulatedNodes), reconciled by SsmAuditFunction into DynamoDB Local."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest
from prefetcher import verify
from prefetcher.settings import AgentSettings
from prefetcher.states import NodeImageUpdate, NodeState
from prefetcher.store import AuditTable
from prefetcher_cli import main as cli

from tests.helpers import moto_commands
from tests.integration.simulated_fleet import IMAGE, PUSH, SimulatedFleet, cli_json
from tests.integration.test_audit import finish, status_event


def test_an_inventory_finding_a_cached_image_absent_records_it_evicted_and_a_present_one_verified(stack, capsys):
    # Given two nodes that pulled the pushed image, and the image removed behind the agent's back on one
    fleet = SimulatedFleet(stack)
    evicted, kept = fleet.launch(2)
    fleet.push()
    pulled = {node: fleet.record(node) for node in (evicted, kept)}
    assert {r.state for r in pulled.values()} == {"cached"}
    fleet.nodes.evict(evicted, IMAGE)
    # When an inventory goes to the cluster and the nodes answer
    (command_id,) = fleet.inventory()
    # Then it was one command by tag targets, with Mode=inventory, recorded as an inventory
    (sent,) = [c for c in moto_commands() if c.command_id == command_id]
    assert sent.parameters["Mode"] == ["inventory"] and sent.targets[0]["Key"] == "tag:kubernetes.io/cluster/ml-prod"
    assert fleet.table.commands.get(command_id).kind == "inventory"
    assert {instance for instance, _ in fleet.nodes.inventories} == {evicted, kept}
    # And the node without it is evicted, last seen when its pull finished, verified now
    gone = fleet.record(evicted)
    assert (gone.state, gone.holds) == ("evicted", False)
    assert gone.last_seen_at == pulled[evicted].finished_at and gone.verified_at
    assert "not on the node" in gone.reason
    # And the node that holds it keeps its pull's record, verified
    held = fleet.record(kept)
    assert (held.state, held.holds, held.command_id) == ("cached", True, pulled[kept].command_id)
    assert held.verified_at and held.verified_at > pulled[kept].finished_at
    # And `prefetcher coverage` counts the eviction and says when the cluster was last verified
    coverage = cli_json(capsys, "coverage", "--cluster", "ml-prod", table=fleet.table.table_name)
    (cluster,) = coverage["clusters"]
    (image,) = cluster["images"]
    assert (image["holding"], image["evicted"], image["given_up"]) == (1, 1, 0)
    assert cluster["last_verified_at"] == max(held.verified_at, gone.verified_at)
    # And `prefetcher node` says per image when it was last verified
    node = cli_json(capsys, "node", evicted, table=fleet.table.table_name)
    assert [(i["state"], i["verified_at"]) for i in node["images"]] == [("evicted", gone.verified_at)]
    # And the tables for people show the same
    capsys.readouterr()
    cli.main(["coverage", "--table", fleet.table.table_name])
    text = capsys.readouterr().out
    assert f"last verified {cluster['last_verified_at']}" in text and "EVICTED" in text and "GIVEN-UP" in text
    cli.main(["node", evicted, "--table", fleet.table.table_name])
    assert "VERIFIED" in capsys.readouterr().out


@pytest.mark.parametrize("stack", [{"HistoryRetentionDays": "1"}], indirect=True)
def test_with_a_short_retention_a_verified_current_image_on_a_live_node_does_not_age_out(stack):
    # Given a one-day retention, and a node's record of a current image pulled three days ago (its expiry has passed)
    fleet = SimulatedFleet(stack)
    fleet.push()  # the image is current in ml-prod
    (node,) = fleet.launch()
    long_ago = datetime.now(UTC) - timedelta(days=3)
    AuditTable(fleet.table.table_name, history_ttl=timedelta(days=1)).node_images.apply(
        NodeImageUpdate(image=IMAGE, instance_id=node, cluster="ml-prod", command_id="0" * 8 + "-0000-4000-8000-" + "0" * 12,
                        requested_at=long_ago, state=NodeState.CACHED, observed_at=long_ago, finished_at=long_ago)
    )  # fmt: skip
    assert fleet.record(node).expires_at < time.time()
    fleet.nodes.place(node, IMAGE)
    # When an inventory finds the image on the node
    fleet.inventory()
    # Then the record is verified and expires a retention after the verification, not after the pull
    record = fleet.record(node)
    assert (record.state, record.holds) == ("cached", True) and record.verified_at
    assert record.expires_at > time.time() + timedelta(hours=23).total_seconds()


def test_a_node_answering_with_an_image_it_has_no_record_of_gets_one_and_an_absent_one_gets_none(stack):
    # Given a current image pushed before two nodes joined (no command reached them): one holds it anyway
    fleet = SimulatedFleet(stack)
    fleet.push()
    holder, empty = fleet.launch(2)
    fleet.nodes.place(holder, IMAGE)
    assert fleet.record(holder) is None and fleet.record(empty) is None
    # When an inventory goes to the cluster
    fleet.inventory()
    # Then the node that holds it gets a live `present` record, verified
    record = fleet.record(holder)
    assert (record.state, record.holds, record.cluster) == ("present", True, "ml-prod")
    assert record.verified_at and record.last_seen_at == record.verified_at
    assert holder in {r.instance_id for r in fleet.table.queries.coverage("ml-prod", IMAGE.repository, IMAGE.digest)}
    # And the node without it, never recorded, gets no record (the catch-up's business)
    assert fleet.record(empty) is None


def test_a_replayed_inventory_status_event_writes_nothing_twice(stack):
    # Given an inventory answered and recorded: one node's image evicted, one verified
    fleet = SimulatedFleet(stack)
    evicted, kept = fleet.launch(2)
    fleet.push()
    fleet.nodes.evict(evicted, IMAGE)
    (command_id,) = fleet.inventory()
    before = {node: fleet.item(node) for node in (evicted, kept)}
    assert before[evicted]["state"] == "evicted" and before[kept].get("verified_at")
    # When its status events are delivered again
    (command,) = [c for c in moto_commands() if c.command_id == command_id]
    fleet.stack.put_events(*(status_event(stack, command, node, "Success") for node in (evicted, kept)))
    fleet.stack.run_sources()
    # Then no record changed, not even its updated_at
    assert {node: fleet.item(node) for node in (evicted, kept)} == before


def test_an_inventory_older_than_a_newer_pull_does_not_overwrite_it(stack):
    # Given a node holding the image, and an inventory sent to it that found the image absent
    fleet = SimulatedFleet(stack)
    (node,) = fleet.launch()
    fleet.push()
    agent = AgentSettings(document_name=stack.output("PrefetchDocument"))
    (inventory_id,) = verify.send_inventory(fleet.table, agent, "ml-prod", key="verify-old")
    absent = json.dumps({"image": IMAGE.pinned, "digest": IMAGE.digest, "tag": IMAGE.tag, "outcome": "absent",
                         "bytes": 0, "seconds": 0, "error": "", "pinned": False})  # fmt: skip
    (inventory,) = [c for c in moto_commands() if c.command_id == inventory_id]
    finish(inventory, node, "Success", "Success", stdout=absent + "\n")
    # and a newer pull of the same image to it (the tag pushed again), which cached it
    time.sleep(0.01)
    stack.functions["ImagePushFunction"].invoke({**PUSH, "id": "later-push", "time": "2026-11-29T11:00:00Z"})
    earlier = {inventory_id, fleet.record(node).command_id}
    (newer,) = [c for c in moto_commands() if c.command_id not in earlier and node in c.instance_ids]
    pulled = json.dumps({"image": IMAGE.pinned, "digest": IMAGE.digest, "tag": IMAGE.tag, "outcome": "pulled",
                         "bytes": 5, "seconds": 1.0, "error": "", "pinned": True})  # fmt: skip
    finish(newer, node, "Success", "Success", stdout=pulled + "\n")
    stack.put_events(status_event(stack, newer, node, "Success"))
    stack.run_sources()
    assert fleet.record(node).command_id == newer.command_id
    # When the older inventory's result arrives after it
    stack.put_events(status_event(stack, inventory, node, "Success"))
    stack.run_sources()
    # Then the newer pull's record stands: cached, not evicted
    record = fleet.record(node)
    assert (record.state, record.holds, record.command_id) == ("cached", True, newer.command_id)
    assert record.verified_at is None
