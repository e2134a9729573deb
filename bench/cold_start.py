"""Cold start: each handler module's import time (`python -X importtime`, median of several runs
in fresh interpreters) as a ratio to `import boto3` alone, which every Python function on Lambda
pays anyway. Importing a handler here runs its module code, as Lambda's init does: settings
validated, clients that are made at init made."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from typing import Any

from bench.common import ROOT, main_of, save
from bench.harness import median

RUNS = 7
HANDLERS = ("image_push", "ssm_audit", "node_join")
ENV = {
    "TABLE_NAME": "audit-table", "DOCUMENT_NAME": "prefetch-document", "TARGET_CLUSTERS": "ml-prod",
    "AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x",
    "POWERTOOLS_SERVICE_NAME": "bench", "POWERTOOLS_METRICS_NAMESPACE": "Bench",
    "PYDANTIC_DISABLE_PLUGINS": "__all__",  # as template.yaml's Globals set it
}  # fmt: skip
# As on Lambda with the XRayTracing parameter at Active (the SDK is loaded and the Tracer made).
TRACING = {"POWERTOOLS_TRACE_DISABLED": "false", "LAMBDA_TASK_ROOT": "/var/task", "AWS_LAMBDA_FUNCTION_NAME": "bench"}


def import_time(module: str, cwd: str, extra: dict[str, str]) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"],
        cwd=cwd, env={**os.environ, **ENV, "POWERTOOLS_TRACE_DISABLED": "true", **extra},
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    for line in done.stderr.splitlines():
        match = re.match(r"import time:\s+\d+ \|\s+(\d+) \| (\S+)$", line)
        if match and match.group(2) == module:
            return int(match.group(1)), done.stderr
    raise RuntimeError(f"no import time for {module}: {done.stderr[-500:]}")


def by_package(stderr: str) -> dict[str, float]:
    """Self time (ms) of the modules imported, by top-level package."""
    totals: Counter[str] = Counter()
    for line in stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+\d+ \|\s*(\S+)$", line)
        if match:
            totals[match.group(2).split(".")[0]] += int(match.group(1))
    return {name: round(us / 1000, 1) for name, us in totals.most_common(12)}


def run() -> dict[str, Any]:
    boto3_times: list[int] = []
    handler_times: dict[str, list[int]] = {h: [] for h in HANDLERS}
    traced_times: dict[str, list[int]] = {h: [] for h in HANDLERS}
    profile = ""
    for _ in range(RUNS):
        # Interleaved, so that machine noise hits the baseline and the handlers alike.
        boto3_times.append(import_time("boto3", str(ROOT), {})[0])
        for handler in HANDLERS:
            spent, stderr = import_time("app", str(ROOT / "functions" / handler), {})
            handler_times[handler].append(spent)
            traced_times[handler].append(import_time("app", str(ROOT / "functions" / handler), TRACING)[0])
            if handler == "node_join":
                profile = stderr
    baseline = median([float(t) for t in boto3_times])
    ratios = {h: round(median([float(t) for t in times]) / baseline, 3) for h, times in handler_times.items()}
    traced = {h: round(median([float(t) for t in times]) / baseline, 3) for h, times in traced_times.items()}
    figures = {"cold_import_ratio_max": max(ratios.values())}
    details = {
        "runs": RUNS,
        "boto3_ms": round(baseline / 1000, 1),
        "ratios": ratios,
        "handler_ms": {h: round(median([float(t) for t in times]) / 1000, 1) for h, times in handler_times.items()},
        "ratios_with_xray_tracing": traced,
        "profile_node_join_ms_by_package": by_package(profile),
    }
    save("cold_start", figures, details)
    return {**figures, **details}


main = main_of(run)


if __name__ == "__main__":
    sys.exit(main())
