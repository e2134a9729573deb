"""The whole flow on the local stack, as `make demo` runs it: push event -> EventBridge rule ->
ImagePushFunction -> SSM (moto) -> node simulator -> status events -> audit rule and queue ->
SsmAuditFunction -> DynamoDB Local -> `prefetcher status`."""

from __future__ import annotations

import itertools
import json
import random
from datetime import UTC, datetime

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from prefetcher_cli import main as cli

from devtools.local_stack import moto_patches
from devtools.local_stack.ec2_fleet import NodeSpec, launch
from devtools.local_stack.lambda_runtime import sqs_event
from devtools.local_stack.node_simulator import NodeSimulator, simulated_agent
from tests.helpers import load_event, moto_commands

PUSH = load_event("ecr-push-tagged.json")


def simulator_for(stack):
    return NodeSimulator(
        put_events=stack.put_events,
        account="123456789012",
        region="us-east-1",
        document_name=stack.output("PrefetchDocument"),
        runner=simulated_agent({"ml/trainer": 1_287_651_328}),
    )


def test_a_push_reaches_every_node_of_the_target_clusters_and_status_lists_each(stack, capsys):
    # Given managed and Karpenter nodes in both target clusters, and a node of another cluster
    ec2 = stack.client("ec2")
    targeted = set(launch(ec2, NodeSpec("ml-prod", "managed", "general"), 2))
    targeted |= set(launch(ec2, NodeSpec("ml-prod", "karpenter", "gpu"), 1))
    targeted |= set(launch(ec2, NodeSpec("ml-batch", "managed", "spot"), 2))
    other = set(launch(ec2, NodeSpec("web", "managed", "frontend"), 1))
    # When the sample push goes through EventBridge and the nodes answer
    stack.put_events(PUSH)
    stack.run_sources(between=simulator_for(stack).step)
    # Then `prefetcher status <repo>:<tag> --output json` lists every targeted node as cached
    capsys.readouterr()
    code = cli.main(["status", "ml/trainer:v1.4.0", "--output", "json", "--table", stack.output("AuditTable")])
    view = json.loads(capsys.readouterr().out)
    assert code == 0
    assert {n["instance_id"]: n["state"] for n in view["nodes"]} == dict.fromkeys(targeted, "cached")
    assert not other & {n["instance_id"] for n in view["nodes"]}
    assert view["summary"] == {"cached": 5}
    assert all(n["bytes"] == 1_287_651_328 for n in view["nodes"])
    # And coverage says every live node of each cluster holds it
    cli.main(["coverage", "--output", "json", "--table", stack.output("AuditTable")])
    coverage = json.loads(capsys.readouterr().out)
    assert {(c["cluster"], i["holding"], i["nodes"]) for c in coverage["clusters"] for i in c["images"]} == {
        ("ml-prod", 3, 3),
        ("ml-batch", 2, 2),
    }


def test_an_unknown_image_is_a_one_line_error_with_exit_code_1(stack, capsys):
    code = cli.main(["status", "ml/unknown:v9", "--output", "json", "--table", stack.output("AuditTable")])
    captured = capsys.readouterr()
    assert code == 1
    assert captured.out == ""
    assert captured.err.strip() == (
        f"prefetcher: no push of ml/unknown:v9 is recorded in table {stack.output('AuditTable')}"
    )


TERMINAL = {
    "Success": ("Success", "cached"),
    "Failed": ("Failed", "failed"),
    "TimedOut": ("Execution Timed Out", "timed-out"),
    "Cancelled": ("Cancelled", "failed"),
}


def test_any_order_and_duplication_of_status_events_ends_in_the_terminal_state(stack):
    # Given one command sent to a pool of nodes
    pool = launch(stack.client("ec2"), NodeSpec("ml-prod", "managed", "general"), 60)
    stack.functions["ImagePushFunction"].invoke(PUSH)
    (command,) = [c for c in moto_commands() if c.instance_ids]
    audit = stack.functions["SsmAuditFunction"]
    table = stack.output("AuditTable")
    nodes = iter(pool)
    requested = command.requested_date_time.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    line = json.dumps(
        {
            "image": f"123456789012.dkr.ecr.us-east-1.amazonaws.com/ml/trainer@{PUSH['detail']['image-digest']}",
            "digest": PUSH["detail"]["image-digest"],
            "tag": "v1.4.0",
            "outcome": "pulled",
        }
    )
    counter = itertools.count()

    # A fresh node per example; no shrinking or replay, so each example needs exactly one node.
    @settings(
        max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None, phases=[Phase.generate]
    )
    @given(
        st.sampled_from(sorted(TERMINAL)),
        st.lists(st.sampled_from(["Pending", "InProgress", "T"]), max_size=8),
        st.randoms(),
    )
    def check(terminal, extra, rng: random.Random):
        instance = next(nodes)
        details, expected = TERMINAL[terminal]
        now = datetime.now(UTC)
        moto_patches.set_invocation(
            "123456789012",
            "us-east-1",
            command.command_id,
            instance,
            status=terminal,
            details=details,
            stdout=line if terminal == "Success" else "",
            response_code=0 if terminal == "Success" else 1,
            started_at=now,
            finished_at=now,
        )
        statuses = ["Pending", "InProgress", terminal] + [terminal if s == "T" else s for s in extra]
        rng.shuffle(statuses)
        bodies = [
            json.dumps(
                {
                    "version": "0",
                    "id": f"e{next(counter)}",
                    "detail-type": "EC2 Command Invocation Status-change Notification",
                    "source": "aws.ssm",
                    "account": "123456789012",
                    "time": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "region": "us-east-1",
                    "resources": [],
                    "detail": {
                        "command-id": command.command_id,
                        "document-name": stack.output("PrefetchDocument"),
                        "instance-id": instance,
                        "requested-date-time": requested,
                        "status": s,
                    },
                }
            )
            for s in statuses
        ]
        # When its events, shuffled and duplicated, are delivered in batches of up to 3, as an SQS
        # event source may cut them
        for start in range(0, len(bodies), 3):
            messages = [
                {"MessageId": f"m{next(counter)}", "ReceiptHandle": "r", "Body": b, "Attributes": {}}
                for b in bodies[start : start + 3]
            ]
            assert audit.invoke(sqs_event(messages, "arn:aws:sqs:us-east-1:123456789012:q", "us-east-1")) == {
                "batchItemFailures": []
            }
        from prefetcher.store import AuditTable

        # Then the node's record ends in the invocation's terminal state
        _, records = AuditTable(table).queries.image("ml/trainer", PUSH["detail"]["image-digest"])
        assert {r.instance_id: r.state for r in records}[instance] == expected

    check()
