"""Real agent output, carried through the audit function into DynamoDB Local: the push path on
the local stack, the SSM document's script run for real on a containerd per node, the status
events through the audit rule and queue."""

from __future__ import annotations

import copy
import random
import tempfile
from pathlib import Path

import pytest
from prefetcher.store import AuditTable

from devtools.local_stack.containerd_nodes import LocalNodes
from devtools.local_stack.ec2_fleet import NodeSpec, launch
from devtools.local_stack.node_simulator import NodeSimulator, real_agent
from tests.helpers import load_event
from tests.integration.test_join import state_event

pytestmark = pytest.mark.node  # a real containerd and registry (needs root)


# Every node runs, whatever fails (with the default 10%, SSM stops a 2-node rollout at its first
# failure and the other node ends Terminated; this test is about what each node reports).
@pytest.mark.parametrize("stack", [{"MaxErrors": "100%"}], indirect=True)
def test_real_pull_results_land_in_the_audit_table(stack, node_base):
    nodes = LocalNodes(Path(tempfile.mkdtemp(prefix="prefetch-nodes-"))).start()
    try:
        # Given two nodes of ml-prod and an image pushed to the (local stand-in for) ECR
        instances = launch(stack.client("ec2"), NodeSpec("ml-prod", "managed", "general"), 2)
        digest = nodes.push("ml/trainer", {"w": random.Random(5).randbytes(2 * 1024 * 1024)}, "v1.4.0")
        push = copy.deepcopy(load_event("ecr-push-tagged.json"))
        push["detail"]["image-digest"] = digest
        # And a second push whose digest the registry does not have
        missing = copy.deepcopy(push)
        missing["id"] = "0d7e0a4e-3f5c-4d1f-9b0e-5f2a7c9e1d11"
        missing["time"] = "2026-11-29T10:20:00Z"
        missing["detail"]["image-tag"] = "v1.5.0"
        missing["detail"]["image-digest"] = "sha256:" + "5" * 64
        simulator = NodeSimulator(
            stack.put_events, "123456789012", "us-east-1", stack.output("PrefetchDocument"), real_agent(nodes)
        )
        # When both go through the stack and the nodes run the agent for real
        stack.put_events(push, missing)
        stack.run_sources(timeout=300, between=simulator.step)
    finally:
        nodes.stop()
    table = AuditTable(stack.output("AuditTable"))
    _, pulled = table.queries.image("ml/trainer", digest)
    _, failed = table.queries.image("ml/trainer", "sha256:" + "5" * 64)
    # Then every node's record carries the agent's own outcome, bytes, seconds and reason
    assert {r.instance_id for r in pulled} == set(instances)
    for record in pulled:
        assert (record.state, record.holds) == ("cached", True)
        assert int(record.bytes) >= 2 * 1024 * 1024 and float(record.seconds) > 0
    for record in failed:
        assert record.state == "failed" and "not found" in record.reason
    assert len(failed) == 2


def test_an_image_the_kubelets_gc_removed_is_found_evicted_and_pulled_again_by_the_catch_up(stack, node_base):
    nodes = LocalNodes(Path(tempfile.mkdtemp(prefix="prefetch-nodes-"))).start()
    try:
        # Given two nodes that joined ml-prod, then pulled a pushed image for real
        instances = launch(stack.client("ec2"), NodeSpec("ml-prod", "managed", "general"), 2)
        simulator = NodeSimulator(
            stack.put_events, "123456789012", "us-east-1", stack.output("PrefetchDocument"), real_agent(nodes)
        )
        stack.put_events(*(state_event(instance, "running") for instance in instances))
        stack.run_sources(timeout=300, between=simulator.step)
        digest = nodes.push("ml/trainer", {"w": random.Random(7).randbytes(1024 * 1024)}, "v1.4.0")
        push = copy.deepcopy(load_event("ecr-push-tagged.json"))
        push["detail"]["image-digest"] = digest
        stack.put_events(push)
        stack.run_sources(timeout=300, between=simulator.step)
        table = AuditTable(stack.output("AuditTable"))
        states = {r.instance_id: r.state for r in table.queries.image("ml/trainer", digest)[1]}
        assert states == dict.fromkeys(instances, "cached")
        # And, behind the tool's back (as the kubelet's image GC would), every name of that digest
        # removed from one node's containerd
        gone, kept = instances
        node = nodes.containerd(gone)
        names = [name for name, image in node.images().items() if image["digest"] == digest]
        assert names
        node.ctr("images", "rm", *names)
        # When the scheduled fleet check runs: its inventory asks every node what it holds
        stack.fire_schedule("FleetCheckScheduleRule")
        stack.run_sources(timeout=300, between=simulator.step)
        # Then the node without the image is recorded evicted, the other verified as holding it
        records = {r.instance_id: r for r in table.queries.image("ml/trainer", digest)[1]}
        assert records[gone].state == "evicted" and records[gone].last_seen_at
        assert records[kept].state == "cached" and records[kept].verified_at
        # When the next fleet check runs: its catch-up sends the node exactly what it lacks
        stack.fire_schedule("FleetCheckScheduleRule")
        stack.run_sources(timeout=300, between=simulator.step)
        # Then the image is on that node's containerd again, and the table says so
        assert any(image["digest"] == digest for image in node.images().values())
        records = {r.instance_id: r for r in table.queries.image("ml/trainer", digest)[1]}
        assert records[gone].state == "cached" and records[gone].holds
    finally:
        nodes.stop()
