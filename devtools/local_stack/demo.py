"""`make demo`: the whole flow on the local stack.

A simulated fleet (two targeted clusters with managed node groups and Karpenter node pools, and
one cluster that is not targeted) runs in moto's EC2; the ECR push event from events/ goes
through the template's EventBridge rule to ImagePushFunction; the node simulator answers the SSM
command as each node's agent would and emits the status events, which go through the audit rule
and queue to SsmAuditFunction; finally `prefetcher status` and `prefetcher coverage` read the
audit table in DynamoDB Local (printed with the CLI's own query and formatting modules, as the
commands print them). Then a node joins late, and the demo image is removed on it behind the
tool's back (as the kubelet's image GC would): the scheduled fleet check's inventory finds it
`evicted`, and the next fleet check's catch-up pulls it again. Everything started here is
stopped at the end, also on Ctrl-C."""

from __future__ import annotations

import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from prefetcher import clients
from prefetcher.errors import PrefetcherError
from prefetcher.refs import ImageRef
from prefetcher.store import AuditTable
from prefetcher.timestamps import event_time
from prefetcher_cli import output, progress, reports, wait

from devtools.local_stack import iam, moto_patches
from devtools.local_stack.ec2_fleet import DEMO_FLEET, NodeSpec, launch
from devtools.local_stack.node_simulator import AgentRunner, NodeSimulator, SimulatedNodes, real_agent
from devtools.local_stack.servers import Servers
from devtools.local_stack.stack import LocalStack
from devtools.local_stack.template_resolver import ROOT

FLEET_CHECK_RULE = "FleetCheckScheduleRule"
PUSH_EVENT = ROOT / "events" / "ecr-push-tagged.json"
JOIN_EVENT = ROOT / "events" / "ec2-running.json"
DEMO_IMAGE_BYTES = {"ml/trainer": 1_287_651_328}


def DEMO_IMAGE_FILES() -> dict[str, bytes]:
    """The real demo image: 48 MiB of incompressible data, so pulls take measurable time."""
    return {"model/weights.bin": random.Random(7).randbytes(48 * 1024 * 1024)}  # noqa: S311 - test data


def say(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def real_nodes_or_reason(real_pulls: str) -> tuple[Any, str]:
    """LocalNodes when real pulls are asked for (or possible, for "auto"), else why not."""
    if real_pulls == "no":
        return None, "asked for simulated pulls"
    from devtools.local_stack import containerd_nodes

    problem = containerd_nodes.unavailable()
    if problem:
        if real_pulls == "yes":
            raise SystemExit(f"prefetcher: real pulls are not possible here: {problem}")
        return None, problem
    return containerd_nodes.LocalNodes(Path(tempfile.mkdtemp(prefix="prefetch-demo-"))).start(), ""


def launch_fleet(stack: LocalStack) -> None:
    say("launching a simulated fleet (tags as EKS managed node groups and Karpenter set them)")
    ec2 = stack.client("ec2")
    for spec, count in DEMO_FLEET:
        ids = launch(ec2, spec, count)
        print(f"    {spec.cluster:<9} {spec.kind:<10} {spec.group:<9} {' '.join(ids)}")


def prepare_agents(nodes: Any, why_not: str, event: dict[str, Any]) -> AgentRunner:
    """The agent each simulated node runs; with real nodes, the demo image is pushed first and
    the push event carries its real digest. Simulated agents remember what each node holds, so
    that they answer the fleet check's inventory too."""
    if nodes is None:
        say(f"node agents: simulated pulls (real pulls need root with containerd: {why_not})")
        return SimulatedNodes(sizes=dict(DEMO_IMAGE_BYTES))
    say("node agents: the SSM document's script, run for real on a containerd per node")
    digest = nodes.push(event["detail"]["repository-name"], DEMO_IMAGE_FILES(), event["detail"]["image-tag"])
    print(f"    demo image pushed to a local registry standing in for ECR: {digest}")
    print(f"    (the push event from {PUSH_EVENT.relative_to(ROOT)} is sent with this digest)")
    event["detail"]["image-digest"] = digest
    return real_agent(nodes)


def join_a_node(stack: LocalStack, simulator: NodeSimulator) -> str:
    """A node joins ml-prod after the push; its SSM agent registers a few seconds after it starts."""
    (instance,) = launch(stack.client("ec2"), NodeSpec("ml-prod", "karpenter", "gpu"))
    moto_patches.set_agent_registered(instance, False)
    say(f"node {instance} joins ml-prod (Karpenter, node pool gpu); its SSM agent is not registered yet")
    event = json.loads(JOIN_EVENT.read_text())
    event["detail"]["instance-id"] = instance
    event["time"] = event_time()
    stack.put_events(event)
    started = time.monotonic()

    def agent_registers_after_a_while() -> int:
        if time.monotonic() - started > 5:
            moto_patches.set_agent_registered(instance, True)
        return simulator.step()

    stack.run_sources(timeout=120, between=agent_registers_after_a_while)
    print("    the node-join function retried until the agent registered, then sent every current image")
    return instance


def pushed_image(event: dict[str, Any]) -> ImageRef:
    """The image of an ECR push event, as the functions name it."""
    detail = event["detail"]
    registry = f"{event['account']}.dkr.ecr.{event['region']}.amazonaws.com"
    return ImageRef(registry, detail["repository-name"], detail["image-digest"], detail["image-tag"])


def evict(runner: AgentRunner, nodes: Any, instance: str, image: ImageRef) -> None:
    """Remove the image from the node behind the tool's back, as the kubelet's image GC would:
    on a real node every name of its digest in containerd's k8s.io namespace."""
    say(f"the image is removed on {instance} behind the tool's back, as the kubelet's image GC would")
    if nodes is None:
        assert isinstance(runner, SimulatedNodes)
        runner.evict(instance, image)
        print(f"    the simulated node {instance} no longer holds {image.repository}@{image.digest[:19]}...")
        return
    containerd = nodes.containerd(instance)
    names = sorted(name for name, info in containerd.images().items() if info["digest"] == image.digest)
    for name in names:
        containerd.ctr("images", "rm", "--sync", name)
        print(f"    ctr -n k8s.io images rm {name}   (containerd of {instance})")
    if not names:
        print(f"    {instance}'s containerd holds no name of {image.digest[:19]}... (nothing to remove)")


def record_state(table: str, instance: str, image: ImageRef) -> str:
    """The state of the node's record of the image in the audit table."""
    _, records = AuditTable(table).queries.image(image.repository, image.digest)
    return next((str(r.state) for r in records if r.instance_id == instance), "missing")


def heal(stack: LocalStack, simulator: NodeSimulator, table: str, instance: str, image: ImageRef) -> None:
    """Two fleet checks (the schedule rule fired twice): the first's inventory finds the image
    gone from the node, the second's catch-up pulls it again."""
    say(f"fleet check (the schedule rule {FLEET_CHECK_RULE} fires): catch-up, then each node's inventory")
    stack.fire_schedule(FLEET_CHECK_RULE)
    stack.run_sources(timeout=120, between=simulator.step)
    print(f"    the inventory found the image absent: the node's record is now {record_state(table, instance, image)}")
    say(f"prefetcher node {instance}")
    show(table, "node", instance)
    say("the next fleet check: its catch-up sends the image to the nodes of a target cluster lacking it")
    stack.fire_schedule(FLEET_CHECK_RULE)
    stack.run_sources(timeout=120, between=simulator.step)
    print(f"    the node pulled it again: its record is now {record_state(table, instance, image)}")
    say("prefetcher coverage")
    show(table, "coverage")


def show(table: str, command: str, argument: str | None = None) -> None:
    """What `prefetcher <command> [argument] --table <table>` prints (an error as its one line)."""
    audit = AuditTable(table)
    try:
        if command == "status":
            output.show(output.status(reports.status(audit, str(argument))))
        elif command == "node":
            output.show(output.node(reports.node(audit, str(argument))))
        else:
            output.show(output.coverage(reports.coverage(audit, argument)))
    except PrefetcherError as error:
        print(f"prefetcher: {error}", file=sys.stderr)


ROLLOUT_PATTERN = {"source": ["eks-image-prefetcher"], "detail-type": ["Image Prefetch Rollout Completed"]}


def pipeline_queue(stack: LocalStack) -> str:
    """What a pipeline would deploy: a rule with the documented pattern (docs/rollout-events.md)
    and a queue as its target, standing in for a pipeline's trigger."""
    url = stack.queue_rule("demo-deploy-when-warm", ROLLOUT_PATTERN)
    print(f"    rule demo-deploy-when-warm {json.dumps(ROLLOUT_PATTERN)} -> queue demo-deploy-when-warm")
    return url


def wait_until_warm(table: str, image: ImageRef) -> int:
    """What `prefetcher wait repository:tag@digest --timeout 2m` prints (not a terminal here)."""
    ref = f"{image.repository}:{image.tag}@{image.digest}"
    say(f"prefetcher wait {ref} --timeout 2m   (a pipeline, before it deploys)")
    target = wait.Target(ref, image.repository, image.tag, image.digest, 100.0)
    outcome, _ = wait.run(AuditTable(table), target, progress.PlainDisplay(sys.stdout, "2m"), timeout=120, interval=5)
    print(f"    exit code {int(outcome)} ({outcome.name.lower()}): the pipeline deploys now")
    return int(outcome)


def show_rollout_events(stack: LocalStack, url: str) -> None:
    """The `Image Prefetch Rollout Completed` events the pipeline's queue received."""
    say("the rollout events the pipeline's queue received (one per push command, emitted once)")
    received = []
    while batch := stack.client("sqs").receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
        received += [json.loads(m["Body"]) for m in batch]
    for event in sorted(received, key=lambda e: str(e["detail"].get("cluster"))):
        print(f"    {event['detail-type']} ({event['source']}), event {event['id']}:")
        print("\n".join("      " + line for line in json.dumps(event["detail"], indent=2).splitlines()))
    if not received:
        print("    none (see the RolloutEventsFunction lines in the function log)")


def push_the_image(stack: LocalStack, simulator: NodeSimulator, event: dict[str, Any], table: str) -> None:
    """The ECR push event through EventBridge; the nodes pull; `prefetcher status`."""
    image = f"{event['detail']['repository-name']}:{event['detail']['image-tag']}"
    digest = event["detail"]["image-digest"][:19]
    say(f"pushing {image} ({digest}...): {PUSH_EVENT.relative_to(ROOT)} to EventBridge")
    stack.put_events(event)
    stack.run_sources(timeout=120, between=simulator.step)
    push = next((s for s in stack.sources if hasattr(s, "results")), None)
    for result in getattr(push, "results", []):
        for command in result.get("commands", []):
            print(f"    SSM command {command['command_id']} -> {command['cluster']} ({command['target']})")
    print(f"    {len(simulator.handled)} node(s) ran the agent")
    say(f"prefetcher status {image}")
    show(table, "status", image)


def report_iam(since: iam.Ledger) -> None:
    """How many of the functions' AWS calls (since the demo started) the roles SAM generates
    allowed (all, or the demo says which were refused, as AWS would have refused them)."""
    say("IAM: each function's calls, checked against the role SAM generates for it")
    calls = since.recorded()
    for function in sorted({call.function for call in calls}):
        mine = [call for call in calls if call.function == function]
        denied = [call for call in mine if not call.allowed]
        actions = len({call.action for call in mine})
        print(f"    {function:<18} {len(mine):>4} calls, {actions} actions, {len(denied)} denied")
        for call in denied[:5]:
            print(f"      {call.describe()}")


def run_demo(real_pulls: str = "auto", log_path: Path | None = None) -> int:
    log_path = log_path or ROOT / ".local" / "demo-functions.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    say("starting the local stack: DynamoDB Local (Java) and moto (EC2, SSM, SQS, EventBridge)")
    demo_calls = iam.Ledger()  # the calls of this demo, not of whatever ran before in this process
    demo_calls.mark()
    servers = Servers().start()
    saved = dict(os.environ)
    nodes = None
    try:
        with log_path.open("w") as log:
            # Locally the node-join retries come every 2 s instead of 15 s, 30 s, 60 s, ...
            stack = LocalStack(servers, log=log, extra_env={"NodeJoinFunction": {"JOIN_RETRY_DELAYS": "2"}}).deploy()
            os.environ.update(servers.environment())
            clients.reset()
            table = stack.output("AuditTable")
            print(f"    table {table}, document {stack.output('PrefetchDocument')}")
            shown = log_path.relative_to(ROOT) if log_path.is_relative_to(ROOT) else log_path
            print(f"    function logs: {shown}")

            launch_fleet(stack)
            say("a pipeline's EventBridge rule for the rollout events (docs/pipelines.md)")
            trigger = pipeline_queue(stack)
            event = json.loads(PUSH_EVENT.read_text())
            event["time"] = event_time()  # pushed now, not when the sample was written
            nodes, why_not = real_nodes_or_reason(real_pulls)
            runner = prepare_agents(nodes, why_not, event)
            simulator = NodeSimulator(
                put_events=stack.put_events,
                account=stack.stack.account,
                region=stack.stack.region,
                document_name=stack.output("PrefetchDocument"),
                runner=runner,
            )

            push_the_image(stack, simulator, event, table)

            joined = join_a_node(stack, simulator)
            say(f"prefetcher node {joined}")
            show(table, "node", joined)
            say("prefetcher coverage")
            show(table, "coverage")

            pushed = pushed_image(event)
            evict(runner, nodes, joined, pushed)
            heal(stack, simulator, table, joined, pushed)
            report_iam(demo_calls)
            code = wait_until_warm(table, pushed)
            show_rollout_events(stack, trigger)
        return code
    finally:
        if nodes is not None:
            nodes.stop()
        os.environ.clear()
        os.environ.update(saved)
        clients.reset()
        servers.stop()
        print("\n==> local stack stopped", flush=True)
