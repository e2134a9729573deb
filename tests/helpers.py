"""Helpers shared by the test suites."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from devtools.local_stack.aws_calls import CallCounter

ROOT = Path(__file__).resolve().parents[1]
EVENTS = ROOT / "events"
# CallCounter is the local stack's (devtools/local_stack/aws_calls.py), shared with the benchmarks.
__all__ = ["CallCounter", "load_event", "moto_commands", "result_lines"]


def load_event(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((EVENTS / name).read_text())
    return loaded


def moto_commands(account: str = "123456789012", region: str = "us-east-1") -> list[Any]:
    from moto.ssm.models import ssm_backends

    return list(ssm_backends[account][region]._commands)


def result_lines(images_parameter: str, outcome: str = "pulled") -> str:
    """The node agent's result lines (agent/prefetch.sh's contract) for every image of a
    command's `Images` parameter."""
    from prefetcher.refs import parse_images_parameter

    lines = [
        json.dumps({"image": image.pinned, "digest": image.digest, "tag": image.tag, "outcome": outcome,
                    "bytes": 1000, "seconds": 1.5, "error": "" if outcome != "failed" else "refused"})
        for image in parse_images_parameter(images_parameter)
    ]  # fmt: skip
    return "".join(f"{line}\n" for line in lines)
