"""How the CLI reads what the user typed."""

from __future__ import annotations

from datetime import timedelta

import pytest
from prefetcher_cli.reports import UsageError, parse_duration, parse_image

DIGEST = "sha256:" + "4d2b5b8e1b7f0a0c9e4b3f6a1d2c8e7f5a9b0c1d2e3f4a5b6c7d8e9f0a1b2c3d"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ml/trainer:v1.4.0", ("ml/trainer", "v1.4.0", "")),
        (f"ml/trainer@{DIGEST}", ("ml/trainer", "", DIGEST)),
        ("123456789012.dkr.ecr.us-east-1.amazonaws.com/ml/trainer:v1", ("ml/trainer", "v1", "")),
        (f"localhost:5000/ml/trainer:v1@{DIGEST}", ("ml/trainer", "v1", DIGEST)),
    ],
)
def test_image_names(text, expected):
    # Given an image name as a user types it
    # When it is parsed
    parsed = parse_image(text)
    # Then it names the repository, tag and digest
    assert parsed == expected


@pytest.mark.parametrize("text", ["ml/trainer", "ml/trainer@sha256:abc", "ML/x:v1", "ml/trainer:$(id)"])
def test_bad_image_names_are_usage_errors(text):
    # Given a name that is not an image's
    # When it is parsed
    # Then it is a usage error
    with pytest.raises(UsageError):
        parse_image(text)


def test_durations():
    # Given durations as a user types them
    # When they are parsed
    # Then they are timedeltas, or usage errors
    assert parse_duration("30m") == timedelta(minutes=30)
    assert parse_duration("7d") == timedelta(days=7)
    with pytest.raises(UsageError):
        parse_duration("yesterday")
