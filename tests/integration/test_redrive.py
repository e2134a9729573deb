"""`prefetcher redrive` on the local stack: dead letters go back once the cause is fixed."""

from __future__ import annotations

import copy
import json

from prefetcher.store import AuditTable
from prefetcher_cli import main as cli

from devtools.local_stack import moto_patches
from devtools.local_stack.ec2_fleet import NodeSpec, launch
from tests.helpers import load_event, moto_commands, result_lines


def test_an_audit_event_that_failed_until_its_command_was_recorded_is_redriven_and_applied(stack, capsys):
    table = AuditTable(stack.output("AuditTable"))
    (instance,) = launch(stack.client("ec2"), NodeSpec("ml-prod", "managed", "general"))
    stack.functions["ImagePushFunction"].invoke(copy.deepcopy(load_event("ecr-push-tagged.json")))
    (command,) = [c for c in moto_commands() if c.instance_ids]
    record = table.commands.get(command.command_id)
    # Given the command's record is missing (say, a bad deploy lost it) while its events arrive
    ddb = stack.client("dynamodb")
    ddb.delete_item(
        TableName=table.table_name, Key={"pk": {"S": f"COMMAND#{command.command_id}"}, "sk": {"S": "#META"}}
    )
    moto_patches.set_invocation("123456789012", "us-east-1", command.command_id, instance, status="Success",
                            stdout=result_lines(command.parameters["Images"][0]), response_code=0)  # fmt: skip
    event = {
        "source": "aws.ssm", "detail-type": "EC2 Command Invocation Status-change Notification", "resources": [],
        "detail": {"command-id": command.command_id, "document-name": stack.output("PrefetchDocument"),
                   "instance-id": instance, "status": "Success",
                   "requested-date-time": command.requested_date_time.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"},
    }  # fmt: skip
    stack.put_events(event)
    fresh = AuditTable(table.table_name)  # a new process: no cached command
    stack.run_sources()
    assert stack.queue_depth("AuditDLQ") == 1
    # When the record is back, a dry run counts and explains, and a redrive moves it back
    fresh.commands.record(record)
    dlq = stack.queues["AuditDLQ"]
    capsys.readouterr()
    assert cli.main(["redrive", dlq, "--dry-run", "--output", "json"]) == 0
    dry = json.loads(capsys.readouterr().out)
    assert (dry["waiting"], dry["moved"], dry["destination"]) == (1, 0, stack.queues["AuditQueue"])
    assert stack.queue_depth("AuditDLQ") == 1
    assert cli.main(["redrive", dlq, "--output", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["moved"] == 1
    stack.run_sources()
    # Then the event is applied, and nothing is left behind
    _, nodes = fresh.queries.image("ml/trainer", command.parameters["Images"][0].rsplit("@", 1)[1])
    assert [(n.instance_id, n.state) for n in nodes] == [(instance, "cached")]
    assert stack.queue_depth("AuditDLQ") == 0


def test_a_rejected_push_can_be_redriven_to_the_functions_queue(stack, capsys):
    bad = copy.deepcopy(load_event("ecr-push-tagged.json"))
    bad["detail"]["image-digest"] = "sha256:nope"
    stack.functions["ImagePushFunction"].invoke(bad)
    dlq = stack.queues["ImagePushDLQ"]
    tap = stack.queues["ImagePushFunctionEcrPushInvoke"]
    capsys.readouterr()
    assert cli.main(["redrive", dlq, "--to-queue", tap, "--output", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["moved"] == 1
    assert "image-digest" in report["reasons"][0]["reason"]
    body = stack.client("sqs").receive_message(QueueUrl=tap)["Messages"][0]["Body"]
    assert json.loads(body)["detail"]["image-digest"] == "sha256:nope"
