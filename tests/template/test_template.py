"""template.yaml passes cfn-lint and `sam validate --lint`, and `sam build` builds it without
Docker (the layer for linux/arm64 through its Makefile)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from devtools.local_stack.template_resolver import load
from tests.helpers import ROOT

SAM = Path(os.environ.get("SAM_CLI", ROOT / ".venv-sam" / "bin" / "sam"))


def sam(*args: str, cwd: Path = ROOT, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    if not SAM.exists():
        pytest.fail(f"SAM CLI not found at {SAM}: run `make install` (it creates .venv-sam)")
    python313 = shutil.which("python3.13")
    path = os.environ["PATH"] if python313 else f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    return subprocess.run(
        [str(SAM), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, "SAM_CLI_TELEMETRY": "0", "PATH": path},
    )


def test_cfn_lint_is_clean():
    result = subprocess.run(
        [str(Path(sys.executable).parent / "cfn-lint"), "template.yaml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_sam_validate_lint_is_clean():
    result = sam("validate", "--lint")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_sam_build_succeeds_without_docker(tmp_path):
    # Given the template and the layer's sources
    build = tmp_path / "build"
    # When `sam build` runs without Docker
    result = sam("build", "--build-dir", str(build), "--cache-dir", str(tmp_path / "cache"))
    # Then it succeeds; the shared package and the arm64 build of pydantic-core are in the layer; botocore is not
    assert result.returncode == 0, result.stdout + result.stderr
    layer = build / "PrefetcherLayer" / "python"
    assert (layer / "prefetcher" / "store" / "__init__.py").exists()
    assert list((layer / "pydantic_core").glob("*aarch64-linux-gnu.so"))
    assert not (layer / "botocore").exists()
    assert (build / "ImagePushFunction" / "app.py").exists()


def test_every_function_has_its_own_log_group_with_retention_and_its_own_policies():
    template = load()
    functions = {k: v for k, v in template["Resources"].items() if v["Type"] == "AWS::Serverless::Function"}
    assert functions
    for logical_id, function in functions.items():
        group = function["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]
        assert template["Resources"][group]["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}, logical_id
        statements = function["Properties"]["Policies"][0]["Statement"]
        assert all("*" not in str(s["Action"]) for s in statements), logical_id


def test_queues_are_encrypted_and_dead_letter_queues_keep_14_days():
    template = load()
    queues = {k: v["Properties"] for k, v in template["Resources"].items() if v["Type"] == "AWS::SQS::Queue"}
    targets = {
        p["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0] for p in queues.values() if "RedrivePolicy" in p
    }
    for name, properties in queues.items():
        assert properties.get("SqsManagedSseEnabled") is True, name
    for name in targets | {"ImagePushDLQ", "EventDeliveryDLQ"}:
        assert queues[name]["MessageRetentionPeriod"] == 1209600, name


def test_the_table_is_on_demand_with_pitr_ttl_and_encryption():
    table = load()["Resources"]["AuditTable"]["Properties"]
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert table["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    assert table["SSESpecification"] == {"SSEEnabled": True}


def test_outputs_name_everything_the_cli_and_tests_need():
    outputs = load()["Outputs"]
    for name in (
        "AuditTableName",
        "PrefetchDocumentName",
        "AuditQueueUrl",
        "AuditDLQUrl",
        "ImagePushDLQUrl",
        "EventDeliveryDLQUrl",
    ):
        assert name in outputs


def test_the_deployed_agent_script_passes_shellcheck(tmp_path):
    from devtools.local_stack.containerd_nodes import deployed_script

    if shutil.which("shellcheck") is None:
        pytest.fail("shellcheck is not installed (Debian package shellcheck; .ci/run installs it)")
    script = deployed_script(tmp_path / "prefetch.sh")
    result = subprocess.run(["shellcheck", "--shell=bash", str(script)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout


def test_the_join_retry_budget_matches_the_queue():
    # The function's last try must be the queue's last receive, and the delays add up to about
    # 15 minutes, as docs/architecture.md says.
    template = load()
    env = template["Resources"]["NodeJoinFunction"]["Properties"]["Environment"]["Variables"]
    redrive = template["Resources"]["NodeJoinQueue"]["Properties"]["RedrivePolicy"]
    attempts = int(env["JOIN_MAX_ATTEMPTS"])
    assert attempts == redrive["maxReceiveCount"]
    delays = [int(d) for d in env["JOIN_RETRY_DELAYS"].split(",")]
    waited = sum(delays[min(n, len(delays)) - 1] for n in range(1, attempts))
    assert 12 * 60 <= waited <= 18 * 60
    assert max(delays) <= 43200  # ChangeMessageVisibility's limit


def test_the_rollout_events_wait_for_the_audit_within_the_queues_budget():
    # Given the rollout function's settings and its queue
    template = load()
    env = template["Resources"]["RolloutEventsFunction"]["Properties"]["Environment"]["Variables"]
    queue = template["Resources"]["RolloutQueue"]["Properties"]
    # Then its last try is the queue's last receive (it emits then, rather than losing the event
    # to the dead-letter queue), and the grace period ends within the receives' span, as
    # docs/rollout-events.md says
    assert int(env["ROLLOUT_MAX_RECEIVES"]) == queue["RedrivePolicy"]["maxReceiveCount"]
    span = (queue["RedrivePolicy"]["maxReceiveCount"] - 1) * queue["VisibilityTimeout"]
    assert int(env["ROLLOUT_GRACE_SECONDS"]) <= span
    # And it matches only the terminal statuses of our document's commands
    pattern = template["Resources"]["RolloutRule"]["Properties"]["EventPattern"]
    assert pattern["detail-type"] == ["EC2 Command Status-change Notification"]
    assert pattern["detail"] == {
        "document-name": [{"Ref": "PrefetchDocument"}],
        "status": ["Success", "Failed", "TimedOut", "Cancelled"],
    }
