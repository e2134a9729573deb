"""The local stand-in for a node's SSM agent is as strict as amazon-ssm-agent where it matters:
parameters checked with Go's regexp (RE2), output cut as the agent cuts it, its own stderr line on
a non-zero exit, SIGKILL of the whole process group at the execution timeout."""

from __future__ import annotations

import os
import re
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from devtools.local_stack import ssm_agent

NOW = datetime(2026, 11, 29, 10, 15, tzinfo=UTC)


def exit_with(code: int, stdout: str = "", stderr: str = "", killed: bool = False) -> ssm_agent.ScriptExit:
    return ssm_agent.ScriptExit(code, stdout, stderr, NOW, NOW, killed=killed)


# ---- parameters: Go's regexp -----------------------------------------------------------------


def test_a_pattern_go_cannot_compile_fails_the_invocation_though_python_accepts_it():
    # Given a nested counted repeat above RE2's 1000 (15 x 128), which Python's re compiles
    pattern = r"^[a-z]{1,128}([._-][a-z0-9]{1,128}){0,15}$"
    assert re.compile(pattern)
    declared = {"Images": {"type": "String", "allowedPattern": pattern}}
    # When the agent checks a value that matches it
    with pytest.raises(ssm_agent.ParameterError, match="compiling allowed pattern"):
        ssm_agent.validate(declared, {"Images": "ml"})


def test_a_value_is_checked_as_go_matches_it():
    declared = {"Name": {"type": "String", "allowedPattern": "^[a-z]+$", "default": "abc"}}
    # `$` is the end of the text in Go (Python's `re` also matches before a final newline)
    assert re.search("^[a-z]+$", "abc\n")
    with pytest.raises(ssm_agent.ParameterError, match="does not match the allowed pattern"):
        ssm_agent.validate(declared, {"Name": "abc\n"})
    # Defaults are filled in, and checked too
    assert ssm_agent.validate(declared, {}) == {"Name": "abc"}
    bad_default = {"Name": {"type": "String", "allowedPattern": "^[0-9]+$", "default": "x"}}
    with pytest.raises(ssm_agent.ParameterError):
        ssm_agent.validate(bad_default, {})


def test_a_refused_invocation_fails_with_nothing_printed():
    report = ssm_agent.refused(ssm_agent.ParameterError("x"))
    assert (report.status, report.response_code, report.stdout, report.stderr) == ("Failed", -1, "", "")


# ---- what the agent reports ----------------------------------------------------------------------


def test_output_is_cut_at_24000_and_8000_bytes_with_the_agents_suffix():
    long_out, long_err = "o" * 30_000, "e" * 9_000
    report = ssm_agent.report(exit_with(0, long_out, long_err))
    assert report.stdout == "o" * 23_980 + "--output truncated--"
    assert report.stderr == "e" * 7_980 + "--output truncated--"
    # Exactly the limit is cut too (the agent keeps `len < limit` whole); one byte less is not
    assert ssm_agent.cut("x" * 24_000, 24_000).endswith("--output truncated--")
    assert ssm_agent.cut("x" * 23_999, 24_000) == "x" * 23_999
    # Bytes, not characters
    assert len(ssm_agent.cut("é" * 12_000, 24_000).encode()) <= 24_000


def test_a_non_zero_exit_adds_the_agents_own_line_and_137_is_a_timeout():
    failed = ssm_agent.report(exit_with(3, stderr="prefetch: no containerd\n"))
    assert (failed.status, failed.response_code) == ("Failed", 3)
    assert failed.stderr == "prefetch: no containerd\nfailed to run commands: exit status 3"
    assert ssm_agent.report(exit_with(0)).status == "Success"
    for timed_out in (exit_with(137), exit_with(-9, killed=True)):
        report = ssm_agent.report(timed_out)
        assert (report.status, report.details, report.response_code) == ("TimedOut", "Execution Timed Out", 137)
        assert "failed to run commands" not in report.stderr


# ---- running the script ------------------------------------------------------------------------


def script(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "_script.sh"
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(0o700)
    return path


def test_at_the_timeout_the_whole_process_group_is_killed_and_printed_output_kept(tmp_path):
    # Given a script that prints, starts a child in its group and one in a session of its own
    marker_group, marker_escaped = tmp_path / "group", tmp_path / "escaped"
    body = (
        'echo "first line"\n'
        f'(sleep 3; touch "{marker_group}") &\n'
        f'(setsid bash -c "sleep 3; touch {marker_escaped}" </dev/null >/dev/null 2>&1 &)\n'
        "trap 'echo trapped >&2' EXIT TERM\n"
        "sleep 30\n"
    )
    started = time.monotonic()
    # When it runs past its execution timeout
    done = ssm_agent.run_script(script(tmp_path, body), {"PATH": os.environ["PATH"]}, timeout=1.5)
    assert time.monotonic() - started < 10
    assert done.killed
    report = ssm_agent.report(done)
    # Then it was stopped with SIGKILL (no trap ran), what it printed is kept, the child in its
    # group died with it, and only the one that left the group lives on
    assert report.status == "TimedOut"
    assert report.stdout == "first line\n"
    assert "trapped" not in report.stderr
    time.sleep(3)
    assert not marker_group.exists()
    assert marker_escaped.exists()


def test_a_process_that_keeps_the_output_open_keeps_the_step_running(tmp_path):
    # Go's exec waits for the output copies: a background process holding stdout delays the end
    body = "(sleep 30) &\necho done\nexit 0\n"
    done = ssm_agent.run_script(script(tmp_path, body), {"PATH": os.environ["PATH"]}, timeout=2)
    assert done.killed and ssm_agent.report(done).status == "TimedOut"
    # and one that lets go of it does not
    body = "(sleep 30 </dev/null >/dev/null 2>&1) &\necho done\nexit 0\n"
    done = ssm_agent.run_script(script(tmp_path, body), {"PATH": os.environ["PATH"]}, timeout=5)
    assert not done.killed and done.code == 0 and done.stdout == "done\n"
