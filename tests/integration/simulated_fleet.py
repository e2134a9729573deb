"""A cluster of simulated nodes on the local stack, for the inventory and fleet-check tests:
nodes that remember what they hold (node_simulator.SimulatedNodes), the push of the sample
event, an inventory, a scheduled fleet check, and each node's record of the pushed image."""

from __future__ import annotations

import json
from typing import Any

from prefetcher import verify
from prefetcher.refs import ImageRef
from prefetcher.settings import AgentSettings
from prefetcher.store import AuditTable, keys
from prefetcher_cli import main as cli

from devtools.local_stack.ec2_fleet import NodeSpec, launch
from devtools.local_stack.node_simulator import NodeSimulator, SimulatedNodes
from tests.helpers import load_event
from tests.integration.test_join import state_event

PUSH = load_event("ecr-push-tagged.json")
IMAGE = ImageRef("123456789012.dkr.ecr.us-east-1.amazonaws.com", "ml/trainer", PUSH["detail"]["image-digest"], "v1.4.0")
SCHEDULE = "FleetCheckScheduleRule"
SIZES = {"ml/trainer": 1_287_651_328}


class SimulatedFleet:
    def __init__(self, stack: Any, nodes: SimulatedNodes | None = None) -> None:
        self.stack = stack
        self.nodes = nodes if nodes is not None else SimulatedNodes(sizes=SIZES)
        self.simulator = NodeSimulator(
            stack.put_events, "123456789012", "us-east-1", stack.output("PrefetchDocument"), self.nodes
        )
        self.table = AuditTable(stack.output("AuditTable"))

    def launch(self, count: int = 1) -> list[str]:
        """Instances of ml-prod, not yet told to the node-join path."""
        return launch(self.stack.client("ec2"), NodeSpec("ml-prod", "managed", "general"), count)

    def join(self, count: int) -> list[str]:
        """Nodes of ml-prod that started (their running events through the node-join path)."""
        nodes = self.launch(count)
        self.stack.put_events(*(state_event(node, "running") for node in nodes))
        self.run()
        return nodes

    def run(self) -> None:
        self.stack.run_sources(between=self.simulator.step)

    def push(self, event: dict[str, Any] = PUSH) -> None:
        self.stack.put_events(event)
        self.run()

    def inventory(self, key: str = "verify-1") -> list[str]:
        """Ask ml-prod's nodes what they hold, and let them answer through the audit path."""
        agent = AgentSettings(document_name=self.stack.output("PrefetchDocument"))
        sent = verify.send_inventory(self.table, agent, "ml-prod", key=key)
        self.run()
        return sent

    def fleet_check(self, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """The schedule rule fires (again, with `event`): FleetCheckFunction, then the nodes."""
        fired: dict[str, Any] = self.stack.fire_schedule(SCHEDULE, event)
        self.run()
        return fired

    def record(self, instance: str) -> Any:
        _, records = self.table.queries.image(IMAGE.repository, IMAGE.digest)
        found = [r for r in records if r.instance_id == instance]
        return found[0] if found else None

    def item(self, instance: str) -> dict[str, Any]:
        return self.table.client.get(keys.node_image(IMAGE.repository, IMAGE.digest, instance)) or {}


def cli_json(capsys: Any, *args: str, table: str) -> Any:
    capsys.readouterr()
    assert cli.main([*args, "--output", "json", "--table", table]) == 0
    return json.loads(capsys.readouterr().out)
