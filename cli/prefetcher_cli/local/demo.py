"""`make demo`: the whole flow on the local stack.

A simulated fleet (two targeted clusters with managed node groups and Karpenter node pools, and
one cluster that is not targeted) runs in moto's EC2; the ECR push event from events/ goes
through the template's EventBridge rule to ImagePushFunction; the node simulator answers the SSM
command as each node's agent would and emits the status events, which go through the audit rule
and queue to SsmAuditFunction; finally `prefetcher status` and `prefetcher coverage` read the
audit table in DynamoDB Local. Everything started here is stopped at the end, also on Ctrl-C."""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from prefetcher import clients

from prefetcher_cli import main as cli
from prefetcher_cli.local.fleet import DEMO_FLEET, launch
from prefetcher_cli.local.simulator import AgentRunner, NodeSimulator, simulated_agent
from prefetcher_cli.local.stack import LocalStack, Servers
from prefetcher_cli.local.template import ROOT

PUSH_EVENT = ROOT / "events" / "ecr-push-tagged.json"
DEMO_IMAGE_BYTES = {"ml/trainer": 1_287_651_328}


def say(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def choose_runner(real_pulls: str) -> tuple[AgentRunner, str]:
    if real_pulls == "yes":
        raise SystemExit("prefetcher: real pulls are not available in this version; run with --real-pulls no")
    return simulated_agent(DEMO_IMAGE_BYTES), "simulated pulls (each node answers as a successful agent would)"


def run_demo(real_pulls: str = "auto", log_path: Path | None = None) -> int:
    log_path = log_path or ROOT / ".local" / "demo-functions.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    say("starting the local stack: DynamoDB Local (Java) and moto (EC2, SSM, SQS, EventBridge)")
    servers = Servers().start()
    saved = dict(os.environ)
    try:
        with log_path.open("w") as log:
            stack = LocalStack(servers, log=log).deploy()
            os.environ.update(servers.environment())
            clients.reset()
            table = stack.output("AuditTable")
            print(f"    table {table}, document {stack.output('PrefetchDocument')}")
            print(f"    function logs: {log_path.relative_to(ROOT)}")

            say("launching a simulated fleet (tags as EKS managed node groups and Karpenter set them)")
            ec2 = stack.client("ec2")
            for spec, count in DEMO_FLEET:
                ids = launch(ec2, spec, count)
                print(f"    {spec.cluster:<9} {spec.kind:<10} {spec.group:<9} {' '.join(ids)}")

            runner, how = choose_runner(real_pulls)
            say(f"node agents: {how}")
            simulator = NodeSimulator(
                put_events=stack.put_events,
                account=stack.stack.account,
                region=stack.stack.region,
                document_name=stack.output("PrefetchDocument"),
                runner=runner,
            )

            event = json.loads(PUSH_EVENT.read_text())
            image = f"{event['detail']['repository-name']}:{event['detail']['image-tag']}"
            digest = event["detail"]["image-digest"][:19]
            say(f"pushing {image} ({digest}...): {PUSH_EVENT.relative_to(ROOT)} to EventBridge")
            _put(stack, event)
            stack.run_sources(timeout=120, between=simulator.step)
            push = next((s for s in stack.sources if hasattr(s, "results")), None)
            for result in getattr(push, "results", []):
                for command in result.get("commands", []):
                    print(f"    SSM command {command['command_id']} -> {command['cluster']} ({command['target']})")
            print(f"    {len(simulator.handled)} node(s) ran the agent")

            say(f"prefetcher status {image}")
            cli.main(["status", image, "--table", table])
            say("prefetcher coverage")
            cli.main(["coverage", "--table", table])
        return 0
    finally:
        os.environ.clear()
        os.environ.update(saved)
        clients.reset()
        servers.stop()
        print("\n==> local stack stopped", flush=True)


def _put(stack: LocalStack, event: dict[str, Any]) -> None:
    entry = {
        "Source": event["source"],
        "DetailType": event["detail-type"],
        "Detail": json.dumps(event["detail"]),
        "Resources": event.get("resources", []),
        "Time": datetime.fromisoformat(event["time"].replace("Z", "+00:00")),
    }
    answer = stack.client("events").put_events(Entries=[entry])
    if answer.get("FailedEntryCount"):
        print(f"PutEvents failed: {answer['Entries']}", file=sys.stderr)
