"""What the benchmarks share: the local stack (started once), call counting, timing."""

from __future__ import annotations

import os
import statistics
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prefetcher import clients

from devtools.local_stack.aws_calls import CallCounter
from devtools.local_stack.servers import Servers
from devtools.local_stack.stack import LocalStack


class Calls(CallCounter):
    """AWS calls made through prefetcher.clients, by service.operation (and Query counts)."""

    def __init__(self) -> None:
        super().__init__(keep_params=False)
        self.scanned = 0
        self.returned = 0
        self.capacity = 0.0

    def attach(self, service: str, client: Any) -> None:
        super().attach(service, client)
        client.meta.events.register("after-call.dynamodb", self._read)

    def _count(self, params: dict[str, Any], event_name: str, **kwargs: Any) -> None:
        super()._count(params, event_name, **kwargs)
        if event_name.endswith(("Query", "Scan", "GetItem")):
            params.setdefault("ReturnConsumedCapacity", "TOTAL")

    def _read(self, parsed: dict[str, Any], model: Any, **_: Any) -> None:
        with self._lock:
            if model.name in ("Query", "Scan"):
                self.scanned += int(parsed.get("ScannedCount", 0))
                self.returned += int(parsed.get("Count", 0))
            elif model.name == "GetItem":
                self.scanned += 1 if "Item" in parsed else 0
                self.returned += 1 if "Item" in parsed else 0
            self.capacity += float(parsed.get("ConsumedCapacity", {}).get("CapacityUnits", 0.0))


@contextmanager
def counting() -> Iterator[Calls]:
    """Count the calls made in the block. The functions' calls are checked against their roles
    (devtools/local_stack/iam.py): a call AWS would refuse fails the benchmark, so what is counted
    is what the strict local stack lets through."""
    from devtools.local_stack import iam

    ledger = iam.Ledger()
    ledger.mark()
    with Calls() as calls:
        yield calls
    refused = ledger.violations()
    if refused:
        raise AssertionError("calls AWS would refuse: " + "; ".join(call.describe() for call in refused[:5]))


@contextmanager
def local_servers() -> Iterator[Servers]:
    servers = Servers().start()
    saved = dict(os.environ)
    os.environ.update(servers.environment())
    os.environ["POWERTOOLS_METRICS_DISABLED"] = "true"
    clients.reset()
    try:
        yield servers
    finally:
        os.environ.clear()
        os.environ.update(saved)
        clients.reset()
        servers.stop()


def fresh_stack(servers: Servers, clusters: str = "ml-prod", log: Any = None) -> LocalStack:
    servers.reset_moto()
    return LocalStack(
        servers, name=f"b{uuid.uuid4().hex[:8]}", overrides={"TargetClusters": clusters},
        log=log or Path(os.devnull).open("w"),
    ).deploy()  # fmt: skip


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def timed(action: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    result = action()
    return time.perf_counter() - started, result
