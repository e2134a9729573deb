"""Image references: one definition, used by the functions, the CLI and (as text) the agent."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prefetcher import refs
from prefetcher.refs import ImageRef

DIGEST = "sha256:" + "4d2b5b8e1b7f0a0c9e4b3f6a1d2c8e7f5a9b0c1d2e3f4a5b6c7d8e9f0a1b2c3d"
REGISTRY = "123456789012.dkr.ecr.us-east-1.amazonaws.com"

label = st.from_regex(r"\A[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?\Z")
component = st.from_regex(r"\A[a-z0-9]{1,6}([._-][a-z0-9]{1,6}){0,2}\Z")
registries = st.builds(
    lambda labels, port: ".".join(labels) + port,
    st.lists(label, min_size=1, max_size=4),
    st.sampled_from(["", ":5000", ":443"]),
)
repositories = st.lists(component, min_size=1, max_size=4).map("/".join).filter(lambda r: len(r) >= 2)
tags = st.from_regex(r"\A[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}\Z")
digests = st.from_regex(r"\Asha256:[a-f0-9]{64}\Z")


@given(registries, repositories, digests, st.one_of(st.just(""), tags))
def test_any_valid_reference_round_trips_through_the_agent_parameter(registry, repository, digest, tag):
    # Given any valid image
    image = ImageRef(registry=registry, repository=repository, digest=digest, tag=tag)
    # When it is written as the document's Images parameter and read back
    value = refs.images_parameter([image, image])
    # Then the parameter matches the document's allowedPattern and parses back to the same image
    assert re.match(refs.IMAGES_PARAMETER, value)
    assert [ImageRef.parse_agent_item(item) for item in value.split(",")] == [image, image]


def test_the_forms_of_an_image():
    image = ImageRef(registry=REGISTRY, repository="ml/trainer", digest=DIGEST, tag="v1.4.0")
    assert image.pinned == f"{REGISTRY}/ml/trainer@{DIGEST}"
    assert image.tagged == f"{REGISTRY}/ml/trainer:v1.4.0"
    assert image.agent_item == f"{REGISTRY}/ml/trainer:v1.4.0@{DIGEST}"
    assert image.key == f"ml/trainer@{DIGEST}"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("repository", "ml/trainer;rm -rf /"),
        ("repository", "ml/$(touch /tmp/x)"),
        ("repository", "../etc/passwd"),
        ("repository", "ML/Trainer"),
        ("tag", "v1`id`"),
        ("tag", "-rf"),
        ("tag", "a" * 129),
        ("digest", "sha256:" + "A" * 64),
        ("digest", "sha512:" + "a" * 64),
        ("registry", "evil.com/x"),
        ("registry", "host name"),
    ],
)
def test_hostile_or_malformed_parts_are_refused(field, value):
    parts = {"registry": REGISTRY, "repository": "ml/trainer", "digest": DIGEST, "tag": "v1"}
    parts[field] = value
    with pytest.raises(ValueError, match="invalid"):
        ImageRef(**parts)


@pytest.mark.parametrize(
    "value",
    [
        f"{REGISTRY}/ml/trainer:v1@{DIGEST};id",
        f"{REGISTRY}/ml/trainer:v1@{DIGEST}\n{REGISTRY}/x@{DIGEST}",
        f"{REGISTRY}/ml/trainer:$(id)@{DIGEST}",
        f"{REGISTRY}/ml/trainer:v1@{DIGEST},",
        f"{REGISTRY}/ml/trainer:v1",
        "a" * 10_000,
        f"{REGISTRY}/ml/trainér:v1@{DIGEST}",
    ],
)
def test_the_document_pattern_refuses_what_is_not_a_list_of_pinned_images(value):
    assert not re.match(refs.IMAGES_PARAMETER, value)


def test_too_many_images_for_one_command_are_refused():
    image = ImageRef(registry=REGISTRY, repository="ml/trainer", digest=DIGEST, tag="v1")
    with pytest.raises(ValueError, match="at most 50"):
        refs.images_parameter([image] * 51)


def test_ecr_registry_of_china_regions():
    assert refs.ecr_registry("123456789012", "cn-north-1") == "123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn"
    assert refs.ecr_registry("123456789012", "eu-west-1") == "123456789012.dkr.ecr.eu-west-1.amazonaws.com"
