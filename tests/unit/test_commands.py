"""Pull commands are cut so that what a node prints always fits in what the SSM agent keeps."""

from __future__ import annotations

import json
import re

from hypothesis import given, settings
from hypothesis import strategies as st
from prefetcher import commands
from prefetcher.refs import IMAGES_MAX_LENGTH, MAX_IMAGES_PER_COMMAND, ImageRef, images_parameter

from tests.helpers import ROOT

REGISTRY = "123456789012.dkr.ecr.us-east-1.amazonaws.com"


def longest(n: int) -> ImageRef:
    """An image with the longest names the document accepts."""
    registry = ".".join(["r" * 63, "s" * 63, "t" * 63, "u" * 61])  # 253 characters
    repository = "/".join([f"{n:03d}" + "a" * 60, *("b" * 63,) * 3])[:256]
    return ImageRef(registry, repository, "sha256:" + f"{n % 10}" * 64, "T" * 128)


def worst_line(image: ImageRef) -> str:
    """The longest line the agent can print for `image` (agent/prefetch.sh's printf)."""
    return (
        json.dumps(
            {
                "image": image.pinned,
                "digest": image.digest,
                "tag": image.tag,
                "outcome": "skipped-disk",
                "bytes": 9_223_372_036_854_775_807,
                "seconds": float("172800.999"),
                "error": "x" * commands.MAX_ERROR,
            },
            separators=(",", ":"),
        )
        + "\n"
    )


def test_the_bound_holds_for_the_longest_line_the_agent_can_print():
    image = longest(1)
    assert len(worst_line(image).encode()) <= commands.line_bound(image)


def test_the_bound_is_the_agents_own():
    script = (ROOT / "agent" / "prefetch.sh").read_text()
    (value,) = re.findall(r"^readonly MAX_ERROR=(\d+)$", script, flags=re.MULTILINE)
    assert int(value) == commands.MAX_ERROR


def test_fifty_images_with_the_longest_names_are_cut_into_commands_whose_output_fits():
    # Given 50 images with the longest names (one command of 50 would print about 60,000 bytes)
    images = [longest(n) for n in range(50)]
    assert sum(len(worst_line(i)) for i in images) > commands.STDOUT_LIMIT
    # When they are cut into commands
    cut = commands.split(images)
    # Then every image is in one command, in order, and each command's worst output fits
    assert [image for command in cut for image in command] == images
    for command in cut:
        output = "".join(worst_line(image) for image in command) + '{"fatal":"' + "x" * commands.MAX_ERROR + '"}\n'
        assert len(output.encode()) < commands.STDOUT_LIMIT - len(commands.TRUNCATED)
        assert len(images_parameter(command)) <= IMAGES_MAX_LENGTH


@settings(max_examples=60)
@given(st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=120))
def test_any_images_are_cut_within_every_limit(lengths):
    images = [
        ImageRef(REGISTRY, f"r{n}/" + "m" * length, "sha256:" + "c" * 64, "v1") for n, length in enumerate(lengths)
    ]
    cut = commands.split(images)
    assert [image for command in cut for image in command] == images
    for command in cut:
        assert 1 <= len(command) <= MAX_IMAGES_PER_COMMAND
        assert sum(commands.line_bound(i) for i in command) <= commands.BUDGET
        images_parameter(command)  # within the parameter's limits


def test_an_inventory_keeps_every_image_of_a_repository_in_one_command():
    # Given 60 current images of a cluster: 30 repositories of two tags each, interleaved
    digest = "sha256:" + "a" * 64
    images = [
        ImageRef("123456789012.dkr.ecr.us-east-1.amazonaws.com", f"team/app-{n % 30}", digest, f"v{n}")
        for n in range(60)
    ]
    # When they are cut into inventory commands
    cut = commands.split_by_repository(images)
    # Then there are two commands within every limit, and no repository is in both
    assert len(cut) == 2 and sum(len(chunk) for chunk in cut) == 60
    assert all(chunk == commands.split(chunk)[0] for chunk in cut)
    first, second = ({image.repository for image in chunk} for chunk in cut)
    assert not first & second
    # (where a plain cut in order would have split every repository across the two)
    assert {i.repository for i in commands.split(images)[0]} & {i.repository for i in commands.split(images)[1]}
