"""The retry budgets in template.yaml agree with each other (so they cannot drift apart)."""

from __future__ import annotations

from typing import Any

import pytest

from devtools.local_stack.template_resolver import load
from tests.helpers import ROOT


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load()


def _functions(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == "AWS::Serverless::Function"}


def _timeout(template: dict[str, Any], function: dict[str, Any]) -> int:
    return int(function["Properties"].get("Timeout", template["Globals"]["Function"]["Timeout"]))


def test_every_queue_that_feeds_a_function_hides_a_message_at_least_six_times_its_timeout(template):
    checked = 0
    for function in _functions(template).values():
        for event in function["Properties"].get("Events", {}).values():
            if event["Type"] != "SQS":
                continue
            queue = event["Properties"]["Queue"]["Fn::GetAtt"][0]
            visibility = template["Resources"][queue]["Properties"]["VisibilityTimeout"]
            assert visibility >= 6 * _timeout(template, function), queue
            checked += 1
    assert checked >= 2


def test_every_queue_that_feeds_a_function_has_a_dead_letter_queue_and_a_bounded_receive_count(template):
    for function in _functions(template).values():
        for event in function["Properties"].get("Events", {}).values():
            if event["Type"] == "SQS":
                queue = template["Resources"][event["Properties"]["Queue"]["Fn::GetAtt"][0]]["Properties"]
                assert 3 <= queue["RedrivePolicy"]["maxReceiveCount"] <= 10
                assert event["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]


def test_every_eventbridge_target_has_a_retry_policy_and_a_dead_letter_queue(template):
    targets = []
    for resource in template["Resources"].values():
        if resource["Type"] == "AWS::Events::Rule":
            targets += resource["Properties"]["Targets"]
    for function in _functions(template).values():
        for event in function["Properties"].get("Events", {}).values():
            if event["Type"] == "EventBridgeRule":
                targets.append(event["Properties"])
    assert len(targets) >= 3
    for target in targets:
        assert target["RetryPolicy"]["MaximumRetryAttempts"] >= 1
        assert target["RetryPolicy"]["MaximumEventAgeInSeconds"] >= 600
        assert target["DeadLetterConfig"]["Arn"] == {"Fn::GetAtt": ["EventDeliveryDLQ", "Arn"]}


def test_asynchronously_invoked_functions_retry_then_keep_the_event(template):
    for name, function in _functions(template).items():
        events = function["Properties"].get("Events", {}).values()
        if any(e["Type"] == "EventBridgeRule" for e in events):
            config = function["Properties"]["EventInvokeConfig"]
            assert config["MaximumRetryAttempts"] >= 1, name
            assert config["DestinationConfig"]["OnFailure"]["Type"] == "SQS", name


def test_botocore_retries_in_standard_or_adaptive_mode(template):
    env = template["Globals"]["Function"]["Environment"]["Variables"]
    assert env["AWS_RETRY_MODE"] in ("standard", "adaptive")
    assert 3 <= int(env["AWS_MAX_ATTEMPTS"]) <= 10


def test_the_budgets_are_written_down(template):
    architecture = (ROOT / "docs" / "architecture.md").read_text()
    for phrase in ("maxReceiveCount", "visibility", "RetryPolicy", "885 s"):
        assert phrase in architecture, phrase
