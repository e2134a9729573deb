"""SsmAuditFunction through the audit rule and queue (moto EventBridge -> SQS -> the function's
SQS event source), with invocation results read back from the SSM API, into DynamoDB Local."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import pytest
from prefetcher.store import AuditTable

from devtools.local_stack import moto_patches, ssm_agent
from devtools.local_stack.ec2_fleet import NodeSpec, launch
from devtools.local_stack.node_simulator import NodeSimulator
from tests.helpers import load_event, moto_commands, result_lines

ACCOUNT, REGION = "123456789012", "us-east-1"
PUSH = load_event("ecr-push-tagged.json")
PINNED = f"123456789012.dkr.ecr.us-east-1.amazonaws.com/ml/trainer@{PUSH['detail']['image-digest']}"


@pytest.fixture
def sent(stack):
    """One node in ml-prod, an image pushed to it: (command id, instance id, table)."""
    (instance,) = launch(stack.client("ec2"), NodeSpec("ml-prod", "managed", "general"))
    stack.functions["ImagePushFunction"].invoke(PUSH)
    (command,) = [c for c in moto_commands() if instance in c.instance_ids]
    return command, instance, AuditTable(stack.output("AuditTable"))


def status_event(stack, command, instance, status):
    return {
        "source": "aws.ssm",
        "detail-type": "EC2 Command Invocation Status-change Notification",
        "resources": [f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/{instance}"],
        "detail": {
            "command-id": command.command_id,
            "document-name": stack.output("PrefetchDocument"),
            "instance-id": instance,
            "requested-date-time": command.requested_date_time.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
            "status": status,
        },
    }


def finish(command, instance, status, details, stdout="", stderr="", code=0):
    now = datetime.now(UTC)
    moto_patches.set_invocation(
        ACCOUNT,
        REGION,
        command.command_id,
        instance,
        status=status,
        details=details,
        stdout=stdout,
        stderr=stderr,
        response_code=code,
        started_at=now,
        finished_at=now,
    )


def result_line(outcome, error="", size=0, seconds=1.0):
    return json.dumps(
        {
            "image": PINNED,
            "digest": PUSH["detail"]["image-digest"],
            "tag": "v1.4.0",
            "outcome": outcome,
            "bytes": size,
            "seconds": seconds,
            "error": error,
        }
    )


def record(table, instance):
    _, nodes = table.queries.image("ml/trainer", PUSH["detail"]["image-digest"])
    (found,) = [n for n in nodes if n.instance_id == instance]
    return found


def test_a_successful_pull_is_recorded_with_bytes_and_seconds(stack, sent):
    # Given a node whose invocation pulled the image
    command, instance, table = sent
    finish(
        command,
        instance,
        "Success",
        "Success",
        stdout=result_line("pulled", size=1_287_651_328, seconds=41.5),
    )
    # When its InProgress and Success events go through the audit path
    stack.put_events(
        status_event(stack, command, instance, "InProgress"),
        status_event(stack, command, instance, "Success"),
    )
    stack.run_sources()
    # Then its record holds the state, size, time and command
    node = record(table, instance)
    assert (node.state, int(node.bytes), float(node.seconds), node.holds) == (
        "cached",
        1_287_651_328,
        41.5,
        True,
    )
    assert node.cluster == "ml-prod" and node.command_id == command.command_id


def test_success_then_a_late_in_progress_stays_success(stack, sent):
    # Given a node whose invocation succeeded, and its Success recorded
    command, instance, table = sent
    finish(command, instance, "Success", "Success", stdout=result_line("present"))
    stack.put_events(status_event(stack, command, instance, "Success"))
    stack.run_sources()
    # When an InProgress and a Pending arrive late
    stack.put_events(
        status_event(stack, command, instance, "InProgress"),
        status_event(stack, command, instance, "Pending"),
    )
    stack.run_sources()
    # Then the record keeps the terminal state
    assert record(table, instance).state == "present"


def test_a_disk_skip_and_its_reason_reach_the_table(stack, sent):
    # Given a node whose agent skipped the image for lack of disk
    command, instance, table = sent
    reason = "only 900 MiB free on /var/lib/containerd, below MinFreeDiskMiB 2048 (missing 1148 MiB)"
    finish(command, instance, "Success", "Success", stdout=result_line("skipped-disk", reason))
    # When its Success goes through the audit path
    stack.put_events(status_event(stack, command, instance, "Success"))
    stack.run_sources()
    # Then the record holds the skip and its reason, and it is a current failure
    node = record(table, instance)
    assert (node.state, node.reason, node.holds) == ("skipped-disk", reason, False)
    assert [f.instance_id for f in table.queries.failures(datetime(2026, 1, 1, tzinfo=UTC))] == [instance]


@pytest.mark.parametrize(
    ("status", "details", "state", "reason"),
    [
        ("TimedOut", "Delivery Timed Out", "undeliverable", "delivery timed out"),
        ("Failed", "Undeliverable", "undeliverable", "undeliverable"),
        ("TimedOut", "Execution Timed Out", "timed-out", "execution timed out"),
        ("Cancelled", "Cancelled", "failed", "cancelled"),
    ],
)
def test_invocations_that_never_printed_results(stack, sent, status, details, state, reason):
    # Given an invocation that ended without running the script
    command, instance, table = sent
    finish(command, instance, status, details, code=-1)
    # When its status goes through the audit path
    stack.put_events(status_event(stack, command, instance, status))
    stack.run_sources()
    # Then the record says how it ended
    node = record(table, instance)
    assert node.state == state and reason in node.reason


def test_a_failed_invocation_gets_its_reason_from_stderr(stack, sent):
    # Given an invocation whose script failed with a message on stderr
    command, instance, table = sent
    finish(command, instance, "Failed", "Failed", stderr="prefetch: neither ctr nor apiclient found\n", code=3)
    # When its status goes through the audit path
    stack.put_events(status_event(stack, command, instance, "Failed"))
    stack.run_sources()
    # Then the reason is the script's own
    assert record(table, instance).reason == "agent exited with code 3: prefetch: neither ctr nor apiclient found"


def test_a_status_event_for_an_unknown_command_is_retried_then_dead_lettered(stack, sent):
    command, instance, _table = sent
    event = status_event(stack, command, instance, "InProgress")
    event["detail"]["command-id"] = "00000000-0000-4000-8000-000000000000"
    stack.put_events(event)
    stack.run_sources()
    # The queue redelivered it maxReceiveCount (5) times, then moved it to the dead-letter queue.
    assert stack.queue_depth("AuditQueue") == 0
    messages = stack.client("sqs").receive_message(QueueUrl=stack.queues["AuditDLQ"], AttributeNames=["All"])[
        "Messages"
    ]
    assert json.loads(messages[0]["Body"])["detail"]["command-id"] == "00000000-0000-4000-8000-000000000000"
    assert messages[0]["Attributes"]["ApproximateReceiveCount"] == "6"


def test_a_malformed_body_goes_straight_to_the_dead_letter_queue_without_failing_the_batch(stack, sent):
    # Given a successful invocation, and a malformed body in the audit queue
    command, instance, table = sent
    finish(command, instance, "Success", "Success", stdout=result_line("pulled"))
    sqs = stack.client("sqs")
    sqs.send_message(
        QueueUrl=stack.queues["AuditQueue"],
        MessageBody='{"detail-type": "EC2 Command Invocation Status-change Notification", "source": "aws.ssm"}',
    )
    # When the invocation's Success goes through the audit path beside it
    stack.put_events(status_event(stack, command, instance, "Success"))
    stack.run_sources()
    # Then the invocation is recorded and only the malformed body is dead-lettered, with why
    assert record(table, instance).state == "cached"
    messages = sqs.receive_message(QueueUrl=stack.queues["AuditDLQ"], MessageAttributeNames=["All"])["Messages"]
    assert len(messages) == 1
    assert "does not match the documented shape" in messages[0]["MessageAttributes"]["ErrorMessage"]["StringValue"]
    assert messages[0]["MessageAttributes"]["Source"]["StringValue"] == "SsmAuditFunction"


def test_events_of_other_documents_never_reach_the_function(stack, sent):
    command, instance, _table = sent
    event = status_event(stack, command, instance, "Success")
    event["detail"]["document-name"] = "AWS-RunShellScript"
    stack.put_events(event)
    assert stack.queue_depth("AuditQueue") == 0


def test_a_batch_writes_once_per_invocation_and_fails_only_the_messages_of_one_that_cannot_be_applied(stack, sent):
    from devtools.local_stack.lambda_runtime import sqs_event
    from tests.helpers import CallCounter

    # Given four events of one invocation and one of an unknown command, in one batch
    command, instance, table = sent
    finish(command, instance, "Success", "Success", stdout=result_line("pulled"))
    unknown = status_event(stack, command, instance, "InProgress")
    unknown["detail"]["command-id"] = "00000000-0000-4000-8000-000000000001"
    bodies = [status_event(stack, command, instance, s) for s in ("Pending", "InProgress", "Success", "InProgress")]
    bodies.append(unknown)

    def envelope(event, n):
        return {"version": "0", "id": f"e{n}", "account": "123456789012", "time": "2026-11-29T10:20:00Z",
                "region": "us-east-1", **event}  # fmt: skip

    messages = [{"MessageId": f"m{n}", "ReceiptHandle": "r", "Body": json.dumps(envelope(e, n)), "Attributes": {}}
                for n, e in enumerate(bodies)]  # fmt: skip
    # When the audit function handles the batch
    with CallCounter() as counter:
        result = stack.functions["SsmAuditFunction"].invoke(
            sqs_event(messages, "arn:aws:sqs:us-east-1:123456789012:q", "us-east-1")
        )
    # Then four events of one invocation make one write (its newest state); the unknown command's message fails alone
    assert result == {"batchItemFailures": [{"itemIdentifier": "m4"}]}
    assert counter.count("dynamodb.UpdateItem") == 1
    assert counter.count("ssm.GetCommandInvocation") == 1
    assert record(table, instance).state == "cached"


# ---- an image the node did not report ----------------------------------------------------------


def agent_reporting(report_from: int):
    """An agent that exits 0 and reports its images only from its `report_from`-th run on."""
    runs = {"n": 0}

    def run(instance_id, parameters):
        runs["n"] += 1
        now = datetime.now(UTC)
        stdout = result_lines(parameters["Images"]) if runs["n"] >= report_from else ""
        return ssm_agent.report(ssm_agent.ScriptExit(0, stdout, "", now, now))

    return run


def test_an_image_the_node_did_not_report_is_unknown_then_sent_again_and_recorded(stack, sent):
    command, instance, table = sent
    simulator = NodeSimulator(stack.put_events, ACCOUNT, REGION, stack.output("PrefetchDocument"), agent_reporting(2))
    # Given a node whose agent exits 0 but reports nothing for the image (it used to be "cached")
    # When its invocation goes through the audit path
    simulator.step()
    stack.run_sources()
    # Then the image is recorded unknown, with why
    first = record(table, instance)
    assert (first.state, first.holds or False) == ("unknown", False)
    assert "no result line" in first.reason
    # And the audit function sent that image to that node again, once, and its report is recorded
    again = [c for c in moto_commands() if c.instance_ids == [instance] and not c.targets]
    assert len(again) == 1 and again[0].parameters["Images"] == command.parameters["Images"]
    stack.run_sources(between=simulator.step)
    final = record(table, instance)
    assert (final.state, final.command_id) == ("cached", again[0].command_id)
    assert len([c for c in moto_commands() if c.instance_ids == [instance]]) == 2


def test_an_image_never_reported_is_failed_after_three_commands(stack, sent):
    # Given a node whose agent never reports the image
    _, instance, table = sent
    simulator = NodeSimulator(stack.put_events, ACCOUNT, REGION, stack.output("PrefetchDocument"), agent_reporting(99))
    # When its invocations go through the audit path, and the image is sent again
    stack.run_sources(between=simulator.step)
    # Then after three commands it is recorded failed
    node = record(table, instance)
    assert node.state == "failed" and "sent again" in node.reason
    assert len([c for c in moto_commands() if instance in c.instance_ids]) == 3


def test_a_full_batch_at_the_design_latency_ends_within_the_functions_timeout(stack):
    from devtools.local_stack.lambda_runtime import sqs_event
    from tests.integration.test_join import DESIGN_LATENCY, SCALE, batch_size, slow_calls

    # Given as many finished invocations as one batch holds
    size = batch_size(stack, "SsmAuditFunction")
    nodes = launch(stack.client("ec2"), NodeSpec("ml-prod", "managed", "general"), size)
    stack.functions["ImagePushFunction"].invoke(PUSH)
    (command,) = [c for c in moto_commands() if set(nodes) & set(c.instance_ids)]
    for node in nodes:
        finish(command, node, "Success", "Success", stdout=result_line("pulled"))
    records = [
        {"MessageId": f"m{n}", "ReceiptHandle": "r", "Body": json.dumps({
            "version": "0", "id": f"e{n}", "account": ACCOUNT, "region": REGION, "time": "2026-11-29T10:16:00Z",
            **status_event(stack, command, node, "Success")}), "Attributes": {"ApproximateReceiveCount": "1"}}
        for n, node in enumerate(nodes)
    ]  # fmt: skip
    function = stack.functions["SsmAuditFunction"]
    function.timeout_seconds = function.enforced_timeout_seconds = function.timeout * SCALE
    # When they arrive in one batch and every AWS call is slow
    with slow_calls(DESIGN_LATENCY * SCALE):
        started = time.monotonic()
        result = function.invoke(sqs_event(records, "arn:aws:sqs:us-east-1:123456789012:q", "us-east-1"))
        print(f"audit batch of {size} at {DESIGN_LATENCY * SCALE} s a call: {time.monotonic() - started:.2f} s")
    # Then the invocation ends within its Timeout and every node's record is written
    assert result == {"batchItemFailures": []}
    _, written = AuditTable(stack.output("AuditTable")).queries.image("ml/trainer", PUSH["detail"]["image-digest"])
    assert sorted(r.state for r in written) == ["cached"] * size
