"""The sample events in events/ keep the shapes AWS documents, and the SQS forms never drift."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
EVENTS_DIR = REPO_ROOT / "events"

# Top-level fields of AWS's published samples, by detail-type. AWS's own EC2 state-change sample
# has no "version"; the ECR and SSM samples do.
TOP_LEVEL_FIELDS = {
    "ECR Image Action": [
        "version",
        "id",
        "detail-type",
        "source",
        "account",
        "time",
        "region",
        "resources",
        "detail",
    ],
    "EC2 Instance State-change Notification": [
        "id",
        "detail-type",
        "source",
        "account",
        "time",
        "region",
        "resources",
        "detail",
    ],
    "EC2 Command Invocation Status-change Notification": [
        "version",
        "id",
        "detail-type",
        "source",
        "account",
        "time",
        "region",
        "resources",
        "detail",
    ],
}
# AWS's "Scheduled Event" sample (EventBridge user guide, "Creating a rule that runs on a
# schedule"; the same shape as aws-lambda-rust-runtime's fixture), and our own request's.
for _name in (
    "Scheduled Event",
    "Fleet Check Requested",
    "EC2 Command Status-change Notification",
    "Image Prefetch Rollout Completed",
):
    TOP_LEVEL_FIELDS[_name] = TOP_LEVEL_FIELDS["ECR Image Action"]
SOURCES = {
    "Scheduled Event": "aws.events",
    "Fleet Check Requested": "eks-image-prefetcher",
    "ECR Image Action": "aws.ecr",
    "EC2 Instance State-change Notification": "aws.ec2",
    "EC2 Command Invocation Status-change Notification": "aws.ssm",
    "EC2 Command Status-change Notification": "aws.ssm",
    "Image Prefetch Rollout Completed": "eks-image-prefetcher",
}
RAW_EVENT_FILES = [
    "ecr-push-tagged.json",
    "ecr-push-untagged-child.json",
    "ecr-delete.json",
    "ec2-running.json",
    "ec2-terminated.json",
    "ssm-invocation-pending.json",
    "ssm-invocation-inprogress.json",
    "ssm-invocation-success.json",
    "ssm-invocation-failed.json",
    "ssm-invocation-timedout.json",
    "ssm-invocation-cancelled.json",
    "events-scheduled.json",
    "fleet-check-requested.json",
    "ssm-command-success.json",
    "rollout-completed.json",
]
SQS_FILES = [
    "sqs-ssm-invocation-success.json",
    "sqs-ssm-invocation-batch.json",
    "sqs-ssm-invocation-failed.json",
    "sqs-ec2-running.json",
    "sqs-ec2-terminated.json",
    "sqs-events-scheduled.json",
    "sqs-fleet-check-requested.json",
    "sqs-ssm-command-success.json",
]
SQS_RECORD_FIELDS = [
    "messageId",
    "receiptHandle",
    "body",
    "attributes",
    "messageAttributes",
    "md5OfBody",
    "eventSource",
    "eventSourceARN",
    "awsRegion",
]
SQS_ATTRIBUTES = ["ApproximateReceiveCount", "SentTimestamp", "SenderId", "ApproximateFirstReceiveTimestamp"]


def load_wrap_sqs() -> ModuleType:
    spec = importlib.util.spec_from_file_location("events_wrap_sqs", EVENTS_DIR / "wrap_sqs.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read_json(name: str) -> Any:
    return json.loads((EVENTS_DIR / name).read_text(encoding="utf-8"))


def test_every_sample_file_parses_as_json() -> None:
    # Given every JSON file in events/
    files = sorted(EVENTS_DIR.glob("*.json"))
    assert {path.name for path in files} >= {*RAW_EVENT_FILES, *SQS_FILES, "env.local.json"}

    for path in files:
        # When it is parsed
        text = path.read_text(encoding="utf-8")
        document = json.loads(text)

        # Then it is a JSON object, written with a 2-space indent and a trailing newline
        assert isinstance(document, dict), path.name
        assert text == json.dumps(document, indent=2) + "\n", path.name


@pytest.mark.parametrize("name", SQS_FILES)
def test_sqs_file_is_exactly_what_wrap_sqs_builds(name: str) -> None:
    # Given the generator, run in-process on the raw events
    wrap_sqs = load_wrap_sqs()
    built = wrap_sqs.build_all(EVENTS_DIR)

    # When its output for this file is rendered
    expected = wrap_sqs.render(built[name])

    # Then the committed file is byte for byte the same (regenerate: python events/wrap_sqs.py)
    assert (EVENTS_DIR / name).read_text(encoding="utf-8") == expected


def test_wrap_sqs_builds_no_file_that_is_missing_and_is_deterministic() -> None:
    # Given the generator
    wrap_sqs = load_wrap_sqs()

    # When it builds twice
    first = wrap_sqs.build_all(EVENTS_DIR)
    second = wrap_sqs.build_all(EVENTS_DIR)

    # Then it builds exactly the known files, identically each time
    assert sorted(first) == sorted(SQS_FILES)
    assert first == second


@pytest.mark.parametrize("name", SQS_FILES)
def test_sqs_records_have_the_lambda_shape_and_a_true_md5(name: str) -> None:
    # Given an SQS-wrapped sample event
    records = read_json(name)["Records"]
    assert records

    for record in records:
        # When its body is hashed
        body = record["body"]
        digest = hashlib.md5(body.encode("utf-8"), usedforsecurity=False).hexdigest()

        # Then md5OfBody is that hash, and the record has the documented fields
        assert record["md5OfBody"] == digest
        assert list(record) == SQS_RECORD_FIELDS
        assert list(record["attributes"]) == SQS_ATTRIBUTES
        assert all(isinstance(value, str) for value in record["attributes"].values())
        assert record["eventSource"] == "aws:sqs"
        assert record["awsRegion"] == record["eventSourceARN"].split(":")[3]
        assert record["messageAttributes"] == {}
        # And the body is one of the raw EventBridge events, unchanged
        assert json.loads(body) in [read_json(raw) for raw in RAW_EVENT_FILES]


def test_the_batch_holds_a_duplicate_delivery_with_its_own_message_id() -> None:
    # Given the SQS batch of invocation events
    records = read_json("sqs-ssm-invocation-batch.json")["Records"]

    # When the records are read as events
    statuses = [json.loads(record["body"])["detail"]["status"] for record in records]
    event_ids = [json.loads(record["body"])["id"] for record in records]
    message_ids = [record["messageId"] for record in records]

    # Then the success event arrives twice, as two distinct SQS messages
    assert statuses == ["Pending", "InProgress", "Success", "Success"]
    assert event_ids[2] == event_ids[3]
    assert len(set(message_ids)) == len(message_ids)


@pytest.mark.parametrize("name", RAW_EVENT_FILES)
def test_eventbridge_events_carry_the_top_level_fields_of_aws_samples(name: str) -> None:
    # Given a raw EventBridge sample event
    event = read_json(name)

    # When its detail-type is looked up
    expected_fields = TOP_LEVEL_FIELDS[event["detail-type"]]

    # Then it has exactly AWS's top-level fields, in AWS's order, with the right source
    assert list(event) == expected_fields
    assert event["source"] == SOURCES[event["detail-type"]]
    assert event["account"] == "123456789012"
    assert event["region"] == "us-east-1"
    assert isinstance(event["resources"], list)
    assert isinstance(event["detail"], dict)


def test_every_eventbridge_event_has_its_own_id() -> None:
    # Given all raw EventBridge events
    ids = [read_json(name)["id"] for name in RAW_EVENT_FILES]

    # Then no two share an id
    assert len(set(ids)) == len(ids)


def test_ecr_push_events_tell_the_index_from_its_untagged_child() -> None:
    # Given the tagged index push and the untagged child push
    tagged = read_json("ecr-push-tagged.json")["detail"]
    child = read_json("ecr-push-untagged-child.json")["detail"]

    # Then the tag and the media types tell them apart
    assert tagged["image-tag"] == "v1.4.0"
    assert tagged["manifest-media-type"] == "application/vnd.oci.image.index.v1+json"
    assert child["image-tag"] == ""
    assert child["manifest-media-type"] == "application/vnd.oci.image.manifest.v1+json"
    assert "artifact-media-type" in tagged
    assert "artifact-media-type" in child


@pytest.mark.parametrize(
    ("name", "status"),
    [
        ("ssm-invocation-pending.json", "Pending"),
        ("ssm-invocation-inprogress.json", "InProgress"),
        ("ssm-invocation-success.json", "Success"),
        ("ssm-invocation-failed.json", "Failed"),
        ("ssm-invocation-timedout.json", "TimedOut"),
        ("ssm-invocation-cancelled.json", "Cancelled"),
    ],
)
def test_ssm_invocation_events_have_the_documented_detail(name: str, status: str) -> None:
    # Given an SSM invocation status-change sample
    event = read_json(name)

    # Then its detail has exactly the fields of AWS's sample, and resources names the instance
    assert list(event["detail"]) == [
        "command-id",
        "document-name",
        "instance-id",
        "requested-date-time",
        "status",
    ]
    assert event["detail"]["status"] == status
    assert event["resources"] == [f"arn:aws:ec2:us-east-1:123456789012:instance/{event['detail']['instance-id']}"]


@pytest.mark.parametrize("name", ["events-scheduled.json", "fleet-check-requested.json"])
def test_the_fleet_check_events_parse_into_the_functions_model(name: str) -> None:
    # Given the schedule's event and an operator's request
    from prefetcher.events import FleetCheckEvent

    event = json.loads((EVENTS_DIR / name).read_text())
    # When FleetCheckFunction's model reads them
    parsed = FleetCheckEvent.model_validate(event)
    # Then the schedule has an empty detail and the request names its cluster and who asked
    assert parsed.scheduled == (name == "events-scheduled.json")
    assert parsed.detail.clusters == ([] if parsed.scheduled else ["ml-prod"])


# AWS's sample of a whole command's status change (Systems Manager's EventBridge examples).
AWS_COMMAND_SAMPLE = {
    "version": "0",
    "id": "51c0891d-0e34-45b1-83d6-95db273d1602",
    "detail-type": "EC2 Command Status-change Notification",
    "source": "aws.ssm",
    "account": "123456789012",
    "time": "2016-07-10T21:51:32Z",
    "region": "us-east-1",
    "resources": ["arn:aws:ec2:us-east-1:123456789012:instance/i-abcd1111"],
    "detail": {
        "command-id": "e8d3c0e4-71f7-4491-898f-c9b35bee5f3b",
        "document-name": "AWS-RunPowerShellScript",
        "expire-after": "2016-07-14T22:01:30.049Z",
        "parameters": {"executionTimeout": ["3600"], "commands": ["date"]},
        "requested-date-time": "2016-07-10T21:51:30.049Z",
        "status": "Success",
    },
}


@pytest.mark.parametrize("event", [AWS_COMMAND_SAMPLE, read_json("ssm-command-success.json")], ids=["aws", "ours"])
def test_command_status_events_have_aws_detail_and_parse_into_the_rollout_model(event: dict[str, Any]) -> None:
    from prefetcher.events import CommandStatusEvent

    # Given AWS's own sample and ours (our document, tag-targeted: no instance in resources)
    assert list(event["detail"]) == list(AWS_COMMAND_SAMPLE["detail"])
    assert all(
        isinstance(v, list) and all(isinstance(x, str) for x in v) for v in event["detail"]["parameters"].values()
    )
    # When RolloutEventsFunction's model reads it
    parsed = CommandStatusEvent.model_validate(event)
    # Then what the path uses is there
    assert parsed.detail.status == "Success"
    assert parsed.detail.command_id == event["detail"]["command-id"]


def test_the_rollout_event_sample_is_valid_against_the_documented_schema() -> None:
    import jsonschema

    # Given the schema in docs/ and our event's sample
    schema = json.loads((REPO_ROOT / "docs" / "rollout-event.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    sample = read_json("rollout-completed.json")
    # Then the sample is valid, and the schema refuses an event of another source or without counts
    jsonschema.Draft202012Validator(schema).validate(sample)
    for broken in ({**sample, "source": "aws.ssm"}, {**sample, "detail": {**sample["detail"], "nodes": {}}}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.Draft202012Validator(schema).validate(broken)
