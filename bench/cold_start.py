"""Cold start: each handler module's import time (`python -X importtime`, median of several runs
in fresh interpreters) as a ratio to `import boto3` alone, which every Python function on Lambda
pays anyway. Importing a handler here runs its module code, as Lambda's init does: settings
validated, clients that are made at init made."""

from __future__ import annotations

import json
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


# Where a handler's init time goes, stage by stage in a fresh interpreter: boto3, the Powertools
# and pydantic modules the handler imports, our modules, then the handler module's own code.
STAGES = """
import ast, json, os, sys, time
def origin(name):
    # The module's file, found on sys.path without importing anything (importlib's find_spec
    # imports a submodule's parent packages, which would move their cost before the first mark).
    relative = name.replace(".", os.sep)
    for base in (os.path.join("..", "..", "layers", "prefetcher"), *sys.path):  # run from functions/<name>
        for candidate in (os.path.join(base, relative + ".py"), os.path.join(base, relative, "__init__.py")):
            if os.path.isfile(candidate):
                return candidate
    raise ModuleNotFoundError(name)
def imports(path):
    tree = ast.parse(open(path).read())
    found = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    return found + [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module]
# What the handler imports, and what our modules it imports import in turn (read, not run).
names, todo, seen = [], imports("app.py"), set()
while todo:
    name = todo.pop(0)
    if name in seen:
        continue
    seen.add(name)
    names.append(name)
    if name.split(".")[0] == "prefetcher" and name != "prefetcher":
        todo += imports(origin(name))
marks = [time.perf_counter()]
import boto3
marks.append(time.perf_counter())
for name in names:
    if name.split(".")[0] in ("aws_lambda_powertools", "pydantic"):
        __import__(name)
marks.append(time.perf_counter())
for name in names:
    if name.split(".")[0] == "prefetcher":
        __import__(name)
marks.append(time.perf_counter())
import app
marks.append(time.perf_counter())
print(json.dumps([round((b - a) * 1000, 1) for a, b in zip(marks, marks[1:])]))
"""
STAGE_NAMES = ("import boto3", "Powertools and pydantic", "our modules", "the handler's module code")

# The clients node_join's first invocation makes, each from its own session (as before) and from
# one shared session (prefetcher.clients now).
CLIENTS = """
import json, sys, time, boto3
shared = boto3.session.Session() if sys.argv[1] == "shared" else None
started = time.perf_counter()
for service in ("dynamodb", "ec2", "ssm", "sqs"):
    (shared or boto3.session.Session()).client(service)
print(round((time.perf_counter() - started) * 1000, 1))
"""


def _python(script: str, cwd: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", script, *args], cwd=cwd, capture_output=True, text=True, check=True,
        env={**os.environ, **ENV, "POWERTOOLS_TRACE_DISABLED": "true"},
    )  # fmt: skip
    return done.stdout.strip().splitlines()[-1]


def stages(handler: str) -> dict[str, float]:
    """Median ms of each init stage of `handler`."""
    runs = [json.loads(_python(STAGES, str(ROOT / "functions" / handler))) for _ in range(RUNS)]
    return {name: round(median([r[i] for r in runs]), 1) for i, name in enumerate(STAGE_NAMES)}


def client_costs() -> dict[str, float]:
    """Median ms to create node_join's four clients: a session each, or one session."""
    each, shared = [], []
    for _ in range(RUNS):
        each.append(float(_python(CLIENTS, str(ROOT), "each")))
        shared.append(float(_python(CLIENTS, str(ROOT), "shared")))
    return {"session_per_client_ms": round(median(each), 1), "one_session_ms": round(median(shared), 1)}


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
        "stages_ms": {h: stages(h) for h in HANDLERS},
        "first_invocation_clients_node_join": client_costs(),
    }
    save("cold_start", figures, details)
    return {**figures, **details}


main = main_of(run)


if __name__ == "__main__":
    sys.exit(main())
