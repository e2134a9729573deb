"""`make invoke` (`prefetcher local invoke` from a clone): one function, one event, on a fresh
local stack; like `sam local invoke`, but without Docker (the handler runs in this process)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from devtools.local_stack.servers import Servers
from devtools.local_stack.stack import LocalStack
from devtools.local_stack.template_resolver import parse_overrides


def invoke(function_id: str, event: Any, overrides: dict[str, str] | None = None) -> Any:
    servers = Servers().start()
    try:
        stack = LocalStack(servers, overrides=overrides or {}, log=sys.stderr).deploy()
        if function_id not in stack.functions:
            known = ", ".join(sorted(stack.functions))
            raise SystemExit(f"prefetcher: no function {function_id} in template.yaml (functions: {known})")
        return stack.functions[function_id].invoke(event)
    finally:
        servers.stop()


def invoke_command(function_id: str, event_path: str, raw_overrides: list[str] | None) -> int:
    """Invoke with the event of `event_path` (- for stdin) and print the result as JSON on
    stdout; a function error is printed as Lambda reports it, with exit code 1."""
    overrides = parse_overrides(raw_overrides or [])
    event = json.loads(Path(event_path).read_text()) if event_path != "-" else json.load(sys.stdin)
    try:
        result = invoke(function_id, event, overrides)
    except Exception as error:  # noqa: BLE001 - a function error is reported as Lambda reports it
        print(json.dumps({"errorMessage": str(error), "errorType": type(error).__name__}, indent=2))
        return 1
    print(json.dumps(result, indent=2, default=str))
    return 0
