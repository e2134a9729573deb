"""The `prefetcher` command as users run it: one-line errors and exit codes, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest
from prefetcher.timestamps import iso
from prefetcher_cli import main as cli
from prefetcher_cli import watch

from devtools.local_stack import moto_patches
from devtools.local_stack.ec2_fleet import NodeSpec, launch
from devtools.local_stack.node_simulator import NodeSimulator, simulated_agent
from devtools.local_stack.servers import free_port
from tests.helpers import ROOT, load_event

ACCOUNT, REGION = "123456789012", "us-east-1"
PUSH = load_event("ecr-push-tagged.json")


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "prefetcher_cli.main", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )


def pending_event(invocation: moto_patches.PendingInvocation) -> dict[str, Any]:
    """SSM's status event for an invocation its node has not picked up yet."""
    return {
        "source": "aws.ssm",
        "detail-type": "EC2 Command Invocation Status-change Notification",
        "resources": [f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/{invocation.instance_id}"],
        "detail": {
            "command-id": invocation.command_id,
            "document-name": invocation.document_name,
            "instance-id": invocation.instance_id,
            "requested-date-time": iso(invocation.requested_at),
            "status": "Pending",
        },
    }


def test_a_missing_table_is_a_one_line_error(aws_env, capsys):
    code = cli.main(["status", "ml/trainer:v1", "--table", "no-such-table"])
    err = capsys.readouterr().err
    assert code == 3
    assert err == "prefetcher: table no-such-table does not exist\n"


def test_an_unreachable_endpoint_is_a_one_line_error_without_traceback():
    port = free_port()  # nothing listens there
    result = run_cli(
        "node",
        "i-0a1b2c3d4e5f60001",
        "--table",
        "audit",
        env={
            "AWS_ENDPOINT_URL_DYNAMODB": f"http://127.0.0.1:{port}",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "x",
            "AWS_SECRET_ACCESS_KEY": "x",
            "AWS_MAX_ATTEMPTS": "1",
        },
    )
    assert result.returncode == 3
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Could not connect to the endpoint URL" in result.stderr


def test_a_bad_image_name_is_a_usage_error(aws_env, capsys):
    assert cli.main(["status", "ml/trainer", "--table", "t"]) == 2
    assert "repository:tag or repository@sha256" in capsys.readouterr().err


def test_local_invoke_runs_the_push_function_on_a_fresh_local_stack():
    # As `sam local invoke ImagePushFunction --event events/ecr-push-tagged.json` would, without Docker
    result = run_cli("local", "invoke", "ImagePushFunction", "--event", "events/ecr-push-tagged.json")
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["action"] == "sent"
    assert {c["cluster"] for c in answer["commands"]} == {"ml-prod", "ml-batch"}
    assert answer["image"].endswith(
        "/ml/trainer@" + "sha256:4d2b5b8e1b7f0a0c9e4b3f6a1d2c8e7f5a9b0c1d2e3f4a5b6c7d8e9f0a1b2c3d"
    )


def test_local_invoke_of_the_audit_function_reports_its_batch_item_failures():
    # The sample's command was never sent on the fresh stack: the record fails and would be retried
    result = run_cli("local", "invoke", "SsmAuditFunction", "--event", "events/sqs-ssm-invocation-success.json")
    assert result.returncode == 0, result.stderr
    event = json.loads((ROOT / "events/sqs-ssm-invocation-success.json").read_text())
    assert json.loads(result.stdout) == {"batchItemFailures": [{"itemIdentifier": event["Records"][0]["messageId"]}]}
    assert "is not recorded (yet)" in result.stderr


def test_local_invoke_of_an_unknown_function_names_the_known_ones():
    result = run_cli("local", "invoke", "NoSuchFunction", "--event", "events/ecr-push-tagged.json")
    assert result.returncode != 0
    assert "ImagePushFunction" in result.stderr and "Traceback" not in result.stderr


def test_status_watch_follows_a_push_from_before_it_is_recorded_until_every_node_is_cached(stack, capsys, monkeypatch):
    # Given two nodes of a target cluster, and `status --watch` started before the push is recorded
    nodes = set(launch(stack.client("ec2"), NodeSpec("ml-prod", "managed", "general"), 2))
    simulator = NodeSimulator(
        put_events=stack.put_events,
        account=ACCOUNT,
        region=REGION,
        document_name=stack.output("PrefetchDocument"),
        runner=simulated_agent({"ml/trainer": 1_287_651_328}),
    )

    def push() -> None:  # recorded and sent; no node has answered
        stack.put_events(PUSH)
        stack.run_sources()

    def nodes_got_it() -> None:  # SSM says Pending for each node: the records are `requested`
        for invocation in moto_patches.pending(ACCOUNT, REGION):
            stack.put_events(pending_event(invocation))
        stack.run_sources()

    def nodes_pulled() -> None:
        stack.run_sources(between=simulator.step)

    rollout = iter([push, nodes_got_it, nodes_pulled])
    waits: list[float] = []

    def advance(seconds: float) -> None:  # each of the watch's sleeps: the rollout's next step
        waits.append(seconds)
        next(rollout)()

    monkeypatch.setattr(watch, "pause", advance)
    capsys.readouterr()
    # When it is watched every second, without a terminal
    code = cli.main(
        ["status", "ml/trainer:v1.4.0", "--watch", "--interval", "1", "--table", stack.output("AuditTable")]
    )
    # Then it waited for the push, then for the nodes, and stopped once every node was cached
    assert code == 0
    assert waits == [1, 1, 1]
    blocks = capsys.readouterr().out.rstrip("\n").split("\n\n")
    assert blocks[0].startswith("waiting for ml/trainer:v1.4.0 to be recorded (no push of ml/trainer:v1.4.0")
    assert blocks[1].endswith("waiting for the first node of ml/trainer:v1.4.0 to report")
    # And printed the table once per change, plain
    for block, state in zip(blocks[2:], ["requested", "cached"], strict=True):
        rows = [line.split() for line in block.splitlines() if line.startswith("ml-prod ")]
        assert {(row[1], row[2]) for row in rows} == {(node, state) for node in nodes}
    assert "\x1b" not in "".join(blocks)
    # And with --output json, the watch of a settled image prints its view once, at once
    monkeypatch.setattr(watch, "pause", lambda _seconds: pytest.fail("slept on a settled image"))
    code = cli.main(["status", "ml/trainer:v1.4.0", "--watch", "-o", "json", "--table", stack.output("AuditTable")])
    view = json.loads(capsys.readouterr().out)
    assert code == 0
    assert {n["instance_id"]: n["state"] for n in view["nodes"]} == dict.fromkeys(nodes, "cached")


def test_ctrl_c_ends_a_watch_with_130_and_one_line(stack, capsys, monkeypatch):
    # Given a watch of an image never pushed
    def interrupted(_seconds: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(watch, "pause", interrupted)
    capsys.readouterr()
    # When Ctrl-C comes while it waits
    code = cli.main(["status", "ml/never:v1", "--watch", "--table", stack.output("AuditTable")])
    # Then it exits 130 with one line, having said what it waited for
    captured = capsys.readouterr()
    assert code == 130
    assert captured.err == "prefetcher: interrupted\n"
    assert captured.out.startswith("waiting for ml/never:v1 to be recorded")


@pytest.mark.parametrize(
    "args", [["--watch", "--interval", "0.5"], ["--watch", "--interval", "soon"], ["--interval", "5"]]
)
def test_a_watch_interval_under_a_second_or_without_watch_is_a_usage_error(args, capsys):
    # Given an interval below 1 s, not a number, or without --watch
    # When status is asked for, Then it is a usage error (2) before any read
    try:
        code = cli.main(["status", "ml/trainer:v1", "--table", "t", *args])
    except SystemExit as exit_:  # argparse's own usage error
        code = int(str(exit_.code))
    assert code == 2
    assert "interval" in capsys.readouterr().err
