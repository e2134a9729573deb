"""A node's SSM agent, emulated in what decides what reaches AWS from a node.

Read from amazon-ssm-agent (docs/aws-conformance.md has the files and the AWS pages):

- **Parameters.** Before any step runs, the agent fills in each parameter's default and checks
  every value against its `allowedPattern` with Go's `regexp` (`regexp.Compile`, then
  `MatchString`: RE2 syntax, unanchored unless the pattern says `^...$`, `$` only at the end of
  the text). A pattern Go cannot compile (a repeat count above 1000, nested repeats whose
  product exceeds 1000, lookarounds, backreferences) or a value that does not match fails the
  whole document: no step runs, nothing is printed. google-re2 compiles and matches as Go's
  `regexp` does.
- **aws:runShellScript.** The script runs as `sh -c <file>` in its own process group with the
  agent's environment plus the `SSM_<name>` variables; at the step's `timeoutSeconds` the
  agent sends SIGKILL to the whole process group (no SIGTERM, no grace: no trap runs) and the
  invocation ends TimedOut with code 137, keeping what was printed so far. A process that left
  the group (setsid) survives; one that still holds the output pipes keeps the agent waiting.
- **What it reports.** Standard output and error are cut to their first 24,000 / 8,000
  characters (bytes: the agent slices the byte string), the kept part ending in
  `--output truncated--`. On a non-zero exit (not a timeout) the plugin appends its own text,
  `failed to run commands: exit status N`, to standard error. An exit code of 137 is reported as
  TimedOut whatever caused it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

STDOUT_LIMIT = 24_000
STDERR_LIMIT = 8_000
TRUNCATED = "--output truncated--"
KILLED = 137  # 128 + SIGKILL: what the agent records when it stops a step at its timeout


class ParameterError(ValueError):
    """The agent refused the document's parameters: the invocation fails before any step runs."""


def _options() -> Any:
    import re2

    options = re2.Options()
    options.log_errors = False  # RE2 would log every refused pattern to stderr
    return options


def go_compile(pattern: str) -> Any:
    """`pattern` compiled as Go's regexp.Compile would (ValueError if Go refuses it)."""
    import re2

    try:
        return re2.compile(pattern, _options())
    except re2.error as error:
        detail = error.args[0].decode() if error.args and isinstance(error.args[0], bytes) else str(error)
        raise ValueError(f"error parsing regexp: {detail}: `{pattern[:120]}`") from None


def validate(declared: Mapping[str, Mapping[str, Any]], given: Mapping[str, str]) -> dict[str, str]:
    """The parameters the step sees: defaults filled in, every value checked against its
    allowedPattern as the agent checks it. ParameterError (the agent's message) if any fails."""
    values: dict[str, str] = {}
    errors: list[str] = []
    for name, spec in declared.items():
        if name in given:
            value = given[name]
        elif "default" in spec:
            value = str(spec["default"])
        else:
            errors.append(f"parameter {name} has no value")
            continue
        values[name] = value
        pattern = spec.get("allowedPattern")
        if not pattern:
            continue
        try:
            compiled = go_compile(str(pattern))
        except ValueError as error:
            errors.append(
                f"error thrown in '{name}' while validating parameter /{name}/: encountered error while "
                f"compiling allowed pattern - internal error: {error}"
            )
            continue
        if compiled.search(value) is None:
            errors.append(
                f"error thrown in '{name}' while validating parameter /{name}/: parameter value "
                f"/{value[:120]}/ does not match the allowed pattern /{str(pattern)[:120]}/"
            )
    if errors:
        raise ParameterError("all errors during param validation errors: " + "; ".join(errors))
    return values


def cut(text: str, limit: int) -> str:
    """The first `limit` bytes, as the agent keeps them (its `StringPrefix`): output of `limit`
    bytes or more keeps `limit - 20` bytes and ends with `--output truncated--`."""
    raw = text.encode()
    if len(raw) < limit:
        return text
    return raw[: limit - len(TRUNCATED)].decode(errors="replace") + TRUNCATED


@dataclass(frozen=True)
class ScriptExit:
    """What the script did: its exit code, its whole output, and whether the agent killed it."""

    code: int
    stdout: str
    stderr: str
    started_at: datetime
    finished_at: datetime
    killed: bool = False


@dataclass(frozen=True)
class Report:
    """An invocation as the agent reports it (what GetCommandInvocation shows)."""

    status: str
    details: str
    response_code: int
    stdout: str
    stderr: str
    started_at: datetime | None
    finished_at: datetime | None
    simulated_seconds: float | None = None  # a simulated run's length (the SSM emulation's clock)

    @property
    def seconds(self) -> float:
        """How long the run took on the rollout's clock: simulated, else its wall time."""
        if self.simulated_seconds is not None:
            return self.simulated_seconds
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return 0.0


def report(run: ScriptExit, simulated_seconds: float | None = None) -> Report:
    """What the agent makes of a script run: status, code and its output rules."""
    stderr = run.stderr
    if run.killed or run.code == KILLED:
        status, details, code = "TimedOut", "Execution Timed Out", KILLED
    elif run.code == 0:
        status, details, code = "Success", "Success", 0
    else:
        status, details, code = "Failed", "Failed", run.code
        stderr += f"failed to run commands: exit status {run.code}"
    return Report(
        status=status,
        details=details,
        response_code=code,
        stdout=cut(run.stdout, STDOUT_LIMIT),
        stderr=cut(stderr, STDERR_LIMIT),
        started_at=run.started_at,
        finished_at=run.finished_at,
        simulated_seconds=simulated_seconds,
    )


def refused(error: ParameterError) -> Report:
    """An invocation whose parameters the agent refused: Failed, no step ran, nothing printed."""
    del error  # the agent sends it as trace output, which GetCommandInvocation does not show
    return Report(
        status="Failed", details="Failed", response_code=-1, stdout="", stderr="", started_at=None, finished_at=None
    )


def run_script(script: Path, environment: Mapping[str, str], timeout: float) -> ScriptExit:
    """Run `script` as aws:runShellScript does: `sh -c <file>` in a new process group, output
    read as it comes; at `timeout` seconds SIGKILL to the group."""
    started = datetime.now(UTC)
    process = subprocess.Popen(
        ["sh", "-c", str(script)],
        env=dict(environment),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        process_group=0,
    )
    chunks: dict[str, list[bytes]] = {"stdout": [], "stderr": []}

    def read(name: str, stream: Any) -> None:
        for chunk in iter(lambda: stream.read1(65536), b""):
            chunks[name].append(chunk)

    readers = [
        threading.Thread(target=read, args=("stdout", process.stdout), daemon=True),
        threading.Thread(target=read, args=("stderr", process.stderr), daemon=True),
    ]
    for reader in readers:
        reader.start()
    deadline = time.monotonic() + timeout
    killed = False
    try:
        process.wait(timeout=max(0.0, deadline - time.monotonic()))
        # Go's exec waits for the output copies too: a process that keeps the pipes open keeps
        # the step running until its timeout.
        for reader in readers:
            reader.join(max(0.0, deadline - time.monotonic()))
        if any(reader.is_alive() for reader in readers):
            killed = True
    except subprocess.TimeoutExpired:
        killed = True
    if killed:
        # The agent stops reading, then kills the group: what is still in the pipes is lost.
        snapshot = {name: b"".join(parts) for name, parts in chunks.items()}
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    else:
        snapshot = {name: b"".join(parts) for name, parts in chunks.items()}
    for reader, stream in zip(readers, (process.stdout, process.stderr), strict=True):
        reader.join(1.0)
        if stream is not None and not reader.is_alive():  # one still reading holds the stream's lock
            stream.close()
    return ScriptExit(
        code=KILLED if killed else process.returncode,
        stdout=snapshot["stdout"].decode(errors="replace"),
        stderr=snapshot["stderr"].decode(errors="replace"),
        started_at=started,
        finished_at=datetime.now(UTC),
        killed=killed,
    )
