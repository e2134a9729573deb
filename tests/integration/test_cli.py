"""The `prefetcher` command as users run it: one-line errors and exit codes, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from prefetcher_cli import main as cli

from devtools.local_stack.servers import free_port
from tests.helpers import ROOT


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
