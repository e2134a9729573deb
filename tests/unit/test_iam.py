"""The local IAM check evaluates identity policies as IAM does, names resources as AWS authorises
them, and refuses to guess where it does not know."""

from __future__ import annotations

import pytest

from devtools.local_stack import iam

REGION, ACCOUNT = "us-east-1", "123456789012"
TABLE = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/audit"


def requested(service: str, operation: str, params: dict, tags: dict | None = None) -> list[iam.Requested]:
    return iam.requested(service, operation, params, region=REGION, account=ACCOUNT, tags=lambda _: tags or {})


def test_resources_are_named_as_aws_authorises_them():
    # A Query on an index is authorised on the index's ARN (the reference's format)
    (query,) = requested("dynamodb", "Query", {"TableName": "audit", "IndexName": "gsi2"})
    assert (query.action, query.resource) == ("dynamodb:Query", f"{TABLE}/index/gsi2")
    # PartiQL: one authorisation per statement, by kind; no IAM action named after the API
    statements = [
        {"Statement": "INSERT INTO \"audit\" VALUE {'pk': ?}"},
        {"Statement": 'UPDATE "audit" SET "a" = ? WHERE "pk" = ?'},
        {"Statement": 'SELECT * FROM "audit"."gsi1" WHERE "gsi1pk" = ?'},
        {"Statement": 'DELETE FROM "audit" WHERE "pk" = ?'},
    ]
    needs = requested("dynamodb", "BatchExecuteStatement", {"Statements": statements})
    assert [(n.action, n.resource, n.statement_index) for n in needs] == [
        ("dynamodb:PartiQLInsert", TABLE, 0),
        ("dynamodb:PartiQLUpdate", TABLE, 1),
        ("dynamodb:PartiQLSelect", f"{TABLE}/index/gsi1", 2),
        ("dynamodb:PartiQLDelete", TABLE, 3),
    ]
    # Actions without resource-level permissions are authorised on "*"
    assert [n.resource for n in requested("ssm", "ListCommands", {})] == ["*"]
    assert [n.resource for n in requested("ec2", "DescribeInstances", {})] == ["*"]
    # SendCommand by InstanceIds: the document and each instance, with its tags as condition keys
    document, instance = requested(
        "ssm", "SendCommand", {"DocumentName": "doc", "InstanceIds": ["i-0123456789abcdef0"]}, {"eks:cluster-name": "c"}
    )
    assert document.resource == f"arn:aws:ssm:{REGION}:{ACCOUNT}:document/doc"
    assert instance.resource == f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/i-0123456789abcdef0"
    assert instance.context["ssm:resourceTag/eks:cluster-name"] == ["c"]
    (queue,) = requested("sqs", "SendMessage", {"QueueUrl": f"http://127.0.0.1:5000/{ACCOUNT}/dlq", "MessageBody": "x"})
    assert queue.resource == f"arn:aws:sqs:{REGION}:{ACCOUNT}:dlq"


def test_an_operation_it_cannot_name_fails_closed():
    with pytest.raises(iam.UnknownRequestError):
        requested("dynamodb", "BatchExecuteStatement", {"Statements": [{"Statement": "EXISTS(SELECT 1)"}]})
    with pytest.raises(KeyError):
        iam.action_spec("dynamodb", "BatchExecuteStatement")  # no IAM action of that name


def test_an_explicit_deny_wins_and_nothing_allowed_is_denied():
    allow = {"Effect": "Allow", "Action": "dynamodb:*Item", "Resource": TABLE}
    deny = {"Sid": "NoDeletes", "Effect": "Deny", "Action": "dynamodb:DeleteItem", "Resource": "*"}
    assert iam.evaluate([allow], "dynamodb:GetItem", TABLE, {}).allowed
    assert not iam.evaluate([allow, deny], "dynamodb:DeleteItem", TABLE, {}).allowed
    assert not iam.evaluate([allow], "dynamodb:Query", TABLE, {}).allowed
    # A table's ARN does not cover its indexes
    assert not iam.evaluate([allow | {"Action": "dynamodb:Query"}], "dynamodb:Query", f"{TABLE}/index/gsi2", {}).allowed


def test_tag_conditions_are_evaluated_against_the_instances_tags():
    statement = {
        "Effect": "Allow",
        "Action": "ssm:SendCommand",
        "Resource": f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/*",
        "Condition": {"StringEquals": {"ssm:resourceTag/eks:cluster-name": ["ml-prod", "ml-batch"]}},
    }
    arn = f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/i-0123456789abcdef0"
    tagged = iam.instance_context({"eks:cluster-name": "ml-batch"})
    assert iam.evaluate([statement], "ssm:SendCommand", arn, tagged).allowed
    assert not iam.evaluate(
        [statement], "ssm:SendCommand", arn, iam.instance_context({"eks:cluster-name": "web"})
    ).allowed
    # A missing key: the condition does not hold (a self-managed node without the tag)
    assert not iam.evaluate([statement], "ssm:SendCommand", arn, {}).allowed


def test_an_operator_it_does_not_implement_is_refused_not_guessed():
    statement = {"Effect": "Allow", "Action": "*", "Resource": "*", "Condition": {"IpAddress": {"aws:SourceIp": "1"}}}
    with pytest.raises(iam.UnsupportedPolicyError):
        iam.evaluate([statement], "ssm:ListCommands", "*", {})


def test_put_events_is_authorised_on_the_bus_with_every_entrys_source_and_only_our_source_passes():
    # Given the rollout function's statement: PutEvents on the default bus, only with our source
    # (events:source is multivalued: ForAllValues, and Null false so that the key must be there)
    bus = f"arn:aws:events:{REGION}:{ACCOUNT}:event-bus/default"
    ours = {
        "Sid": "PutOurEventsOnTheDefaultBus",
        "Effect": "Allow",
        "Action": "events:PutEvents",
        "Resource": bus,
        "Condition": {
            "ForAllValues:StringEquals": {"events:source": "eks-image-prefetcher"},
            "Null": {"events:source": "false"},
        },
    }

    def decide(*sources: str, bus_name: str = "default") -> bool:
        entries = [{"Source": s, "DetailType": "x", "Detail": "{}", "EventBusName": bus_name} for s in sources]
        (need,) = requested("events", "PutEvents", {"Entries": entries})
        return iam.evaluate([ours], need.action, need.resource, need.context).allowed

    # When calls are authorised with the condition keys the reference lists for PutEvents
    (need,) = requested("events", "PutEvents", {"Entries": [{"Source": "a", "DetailType": "b", "Detail": "{}"}]})
    assert need.resource == bus
    assert need.context == {"events:source": ["a"], "events:detail-type": ["b"]}
    # Then our own source passes, and nothing else: another source, one entry of another source
    # among ours (as AWS, every value of a multivalued key counts), or another bus
    assert decide("eks-image-prefetcher", "eks-image-prefetcher")
    assert not decide("aws.ssm")
    assert not decide("eks-image-prefetcher", "aws.ssm")
    assert not decide("eks-image-prefetcher", bus_name="other")
    # and without the key, ForAllValues alone would hold: Null false is what refuses it
    assert iam.evaluate(
        [{**ours, "Condition": {"ForAllValues:StringEquals": ours["Condition"]["ForAllValues:StringEquals"]}}],
        "events:PutEvents",
        bus,
        {},
    ).allowed
    assert not iam.evaluate([ours], "events:PutEvents", bus, {}).allowed
