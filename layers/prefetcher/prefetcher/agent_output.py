"""What the node agent prints, as the audit function reads it from GetCommandInvocation: one
result line per image (agent/prefetch.sh: the result contract), a `fatal` line when it could pull
nothing, and what the SSM agent does to a step's output (cuts it, adds its own exit line).
In inventory mode (document parameter `Mode=inventory`) the result lines say `present` or
`absent` for each image the agent knows, and a last line gives containerd's disk
(`{"disk":{"path":...,"free_bytes":N,"total_bytes":N},"more":N}`). Every line may carry
`"pinned":true|false` (the CRI pin); lines without it still parse.

Pure: no AWS calls. states.py turns a parsed output into one state per image.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from prefetcher.commands import TRUNCATED


class ImageResult(BaseModel):
    """One result line of the node agent (see agent/prefetch.sh: the result contract)."""

    model_config = ConfigDict(extra="ignore", frozen=True, defer_build=True)

    image: str = Field(max_length=600)
    digest: str = Field(max_length=80)
    tag: str = Field("", max_length=200)
    # `absent` only in inventory mode (the image is not in containerd's k8s.io namespace).
    outcome: str = Field(pattern=r"^(pulled|present|absent|skipped-disk|failed)$")
    bytes: int = Field(0, ge=0)
    seconds: float = Field(0.0, ge=0)
    error: str = Field("", max_length=4000)
    # Whether the image carries the CRI pin (io.cri-containerd.pinned=pinned); lines of agents
    # older than the pin have no such field.
    pinned: bool = False


class Disk(BaseModel):
    """The inventory's disk line: containerd's disk as the agent found it."""

    model_config = ConfigDict(extra="ignore", frozen=True, defer_build=True)

    path: str = Field("", max_length=4096)
    free_bytes: int = Field(ge=0)
    total_bytes: int = Field(ge=0)


# What the SSM agent does to a step's output (amazon-ssm-agent, docs/aws-conformance.md): a cut
# output ends with this suffix, and a non-zero exit adds the agent's own last line to stderr.
_AGENT_EXIT_LINE = re.compile(r"failed to run commands: (exit status -?[0-9]+|signal: [a-z ]+)\s*$")
_SCRIPT_LOG = re.compile(r"^[0-9T:-]+Z prefetch: ")


@dataclass(frozen=True)
class AgentOutput:
    """What the node agent printed: its result lines by pinned image, the reason it gave when it
    could pull nothing (a `fatal` line), and whether the SSM agent cut the output."""

    results: dict[str, ImageResult]
    fatal: str = ""
    truncated: bool = False
    # Inventory mode: containerd's disk, and how many image lines the agent left out to stay
    # within its output bound (`more`).
    disk: Disk | None = None
    more: int = 0


def read_agent_output(stdout: str) -> AgentOutput:
    """The agent's lines (see agent/prefetch.sh: the result contract). Other output is ignored;
    a line cut by the SSM agent is not a line."""
    truncated = stdout.endswith(TRUNCATED)
    text = stdout.removesuffix(TRUNCATED)
    lines = text.splitlines()
    if truncated and lines:
        lines = lines[:-1]  # the cut falls inside the last line
    results: dict[str, ImageResult] = {}
    fatal = ""
    disk: Disk | None = None
    more = 0
    for raw in lines:
        line = raw.strip()
        if not line.startswith("{"):
            continue
        try:
            loaded = json.loads(line)
        except ValueError:
            continue
        if isinstance(loaded, dict) and isinstance(loaded.get("fatal"), str) and len(loaded) == 1:
            fatal = loaded["fatal"][:1000]
            continue
        if isinstance(loaded, dict) and isinstance(loaded.get("disk"), dict):
            disk, more = _disk_line(loaded) or (disk, more)
            continue
        try:
            result = ImageResult.model_validate(loaded)
        except ValidationError:
            continue
        results[result.image] = result
    return AgentOutput(results=results, fatal=fatal, truncated=truncated, disk=disk, more=more)


def _disk_line(loaded: dict[str, object]) -> tuple[Disk, int] | None:
    """`{"disk":{...}}`, with `"more":N` beside it (or inside it) when lines were left out."""
    try:
        disk = Disk.model_validate(loaded["disk"])
    except ValidationError:
        return None
    inner = loaded["disk"]
    more = loaded.get("more", inner.get("more", 0) if isinstance(inner, dict) else 0)
    return disk, more if isinstance(more, int) and not isinstance(more, bool) and more >= 0 else 0


def parse_agent_output(stdout: str) -> dict[str, ImageResult]:
    """The agent's result lines, by pinned image reference."""
    return read_agent_output(stdout).results


def script_reason(stderr: str) -> str:
    """The script's own last word on stderr: without the SSM agent's additions (its
    `failed to run commands: exit status N`, the truncation suffix) and without the script's
    time stamp."""
    text = _AGENT_EXIT_LINE.sub("", stderr.removesuffix(TRUNCATED))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    own = [line for line in lines if _SCRIPT_LOG.match(line)]
    last = (own or lines or [""])[-1]
    return _SCRIPT_LOG.sub("", last)[:500]
