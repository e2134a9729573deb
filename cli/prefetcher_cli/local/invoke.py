"""`prefetcher local invoke`: one function, one event, on a fresh local stack; like
`sam local invoke`, but without Docker (the handler runs in this process)."""

from __future__ import annotations

import sys
from typing import Any

from prefetcher_cli.local.stack import LocalStack, Servers


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
