"""Shared by the benchmarks: timing, machine notes, and the results file."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results.json"


def timed(action: Callable[[], Any]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        cpu = platform.processor()
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
    ).stdout.strip()
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "commit": commit,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def save(section: str, figures: dict[str, Any], details: dict[str, Any]) -> None:
    """Merge one benchmark's figures (flat keys) and details into bench/results.json."""
    current = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    current.update(figures)
    current.setdefault("_details", {})[section] = details
    current["_machine"] = machine()
    RESULTS.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")


def main_of(run: Callable[[], dict[str, Any]]) -> Callable[[], int]:
    """A benchmark's `main`: run it and print what it measured."""

    def main() -> int:
        print(json.dumps(run(), indent=2))
        return 0

    return main
