"""AWS limits the template must fit in whatever a user sets its parameters to: a function's
environment (4 KB in all), a role's inline policies (10,240 characters, whitespace not counted),
and SendCommand's document plus parameters (64 KB). CloudFormation enforces the parameters'
MaxLength, MaxValue and AllowedValues before anything is created."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from prefetcher import commands, refs

from devtools.local_stack.template_resolver import Stack, load, transformed

ENVIRONMENT_LIMIT = 4 * 1024  # Lambda: all keys and values of a function's environment
INLINE_POLICIES_LIMIT = 10_240  # IAM: all inline policies of a role, whitespace not counted
DOCUMENT_LIMIT = 64 * 1024  # SendCommand: MaxDocumentSizeExceeded


def worst_parameters(template: dict[str, Any]) -> dict[str, str]:
    """Each parameter at its longest: strings at MaxLength (every one must have one, or a
    pattern or list that bounds it), numbers at MaxValue. A cluster list at its longest is many
    one-letter names (the most quotes and commas in a policy)."""
    values = {}
    for name, spec in template["Parameters"].items():
        if "AllowedValues" in spec:
            values[name] = max((str(v) for v in spec["AllowedValues"]), key=len)
        elif spec["Type"] == "Number":
            values[name] = str(spec["MaxValue"])
        elif name == "AlarmTopicArn":
            values[name] = "arn:aws-us-gov:sns:us-gov-west-1:123456789012:" + "t" * 256
        elif name in ("MaxConcurrency", "MaxErrors"):
            values[name] = "100%"
        elif name == "FleetCheckSchedule":
            values[name] = "cron(" + "1" * 100 + ")"  # the pattern's longest
        elif name == "CatchUpBackoffSeconds":
            values[name] = ",".join(["9999999"] * 10)  # the pattern's longest
        else:
            assert "MaxLength" in spec, f"parameter {name} has no MaxLength: nothing bounds what it adds"
            length = int(spec["MaxLength"])
            values[name] = (
                ",".join("a" * ((length + 1) // 2))[:length] if "," in spec.get("AllowedPattern", ",") else "a" * length
            )
    return values


@pytest.fixture(scope="module")
def worst() -> Stack:
    """The stack resolved with every parameter at its longest and the longest names AWS gives
    its resources (a table 255 characters, a queue URL in the longest region's endpoint)."""
    template = load()
    stack = Stack(template=template, name="s" * 128, region="ap-southeast-2", account="123456789012",
                  overrides=worst_parameters(template))  # fmt: skip
    for logical_id, resource in template["Resources"].items():
        kind = resource["Type"]
        if kind == "AWS::DynamoDB::Table":
            stack.physical[logical_id] = "t" * 255
            stack.arns[logical_id] = f"arn:aws-us-gov:dynamodb:ap-southeast-2:123456789012:table/{'t' * 255}"
        elif kind == "AWS::SQS::Queue":
            name = "q" * 80
            stack.physical[logical_id] = f"https://sqs.ap-southeast-2.amazonaws.com/123456789012/{name}"
            stack.arns[logical_id] = f"arn:aws-us-gov:sqs:ap-southeast-2:123456789012:{name}"
        elif kind == "AWS::SSM::Document":
            stack.physical[logical_id] = "d" * 128
    return stack


def test_every_functions_environment_fits_in_4_kb(worst):
    for function_id in worst.of_type("AWS::Serverless::Function"):
        environment = worst.function_environment(function_id)
        size = sum(len(key.encode()) + len(value.encode()) for key, value in environment.items())
        assert size <= ENVIRONMENT_LIMIT, f"{function_id}: {size} bytes of environment"


def test_every_roles_inline_policies_fit_in_10240_characters(worst):
    template = transformed()
    for logical_id, resource in template["Resources"].items():
        if resource["Type"] != "AWS::IAM::Role":
            continue
        policies = worst.resolve(resource["Properties"].get("Policies", []))
        size = len(re.sub(r"\s", "", json.dumps(policies)))
        assert size <= INLINE_POLICIES_LIMIT, f"{logical_id}: {size} characters of inline policies"


def test_the_document_and_the_largest_parameters_a_sender_makes_fit_in_64_kb():
    content = load()["Resources"]["PrefetchDocument"]["Properties"]["Content"]
    document = len(json.dumps(content, separators=(",", ":")).encode())
    # The senders cut images into commands whose result lines fit in BUDGET (commands.split);
    # an image's Images item is shorter than its result line, and the other parameters are numbers.
    images = min(commands.BUDGET, refs.IMAGES_MAX_LENGTH)
    others = sum(len(str(spec.get("default", ""))) + 20 for spec in content["parameters"].values())
    assert document + images + others <= DOCUMENT_LIMIT, (document, images, others)


def test_every_function_that_sends_the_document_passes_the_stacks_pin_setting():
    # Given the functions whose role may send the prefetch document
    template = load()
    senders = {
        name: resource
        for name, resource in template["Resources"].items()
        if resource["Type"] == "AWS::Serverless::Function"
        and any(
            "ssm:SendCommand" in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]])
            for policy in resource["Properties"].get("Policies", [])
            if isinstance(policy, dict)
            for s in policy.get("Statement", [])
        )
    }
    # (RolloutEventsFunction names the document too, to match its commands, but sends none)
    assert set(senders) == {"ImagePushFunction", "SsmAuditFunction", "NodeJoinFunction", "FleetCheckFunction"}
    # Then each passes PinPrefetchedImages to its agent settings, as it passes CleanupSuperseded
    for name, resource in senders.items():
        variables = resource["Properties"]["Environment"]["Variables"]
        assert variables.get("PIN_IMAGES") == {"Ref": "PinPrefetchedImages"}, name
        assert variables.get("CLEANUP_SUPERSEDED") == {"Ref": "CleanupSuperseded"}, name
