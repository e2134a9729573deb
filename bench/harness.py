"""What the benchmarks share: the local stack (started once), call counting, timing."""

from __future__ import annotations

import os
import statistics
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prefetcher import clients

from devtools.local_stack.servers import Servers
from devtools.local_stack.stack import LocalStack


class Calls:
    """AWS calls made through prefetcher.clients, by service.operation (and Query counts)."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.scanned = 0
        self.returned = 0
        self.capacity = 0.0
        self._lock = threading.Lock()  # the audit path and the benchmarks call from threads

    def attach(self, _service: str, client: Any) -> None:
        client.meta.events.register("before-parameter-build", self._count)
        client.meta.events.register("after-call.dynamodb", self._read)

    def _count(self, event_name: str, params: dict[str, Any], **_: Any) -> None:
        with self._lock:
            self.calls[".".join(event_name.split(".")[1:])] += 1
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

    def total(self, prefix: str = "") -> int:
        return sum(count for name, count in self.calls.items() if name.startswith(prefix))


@contextmanager
def counting() -> Iterator[Calls]:
    """Count the calls made in the block. The functions' calls are checked against their roles
    (prefetcher_cli/local/iam.py): a call AWS would refuse fails the benchmark, so what is counted
    is what the strict local stack lets through."""
    from devtools.local_stack import iam

    calls = Calls()
    clients.reset()
    remove = clients.on_create(calls.attach)
    ledger = iam.Ledger()
    ledger.mark()
    try:
        yield calls
    finally:
        remove()
        clients.reset()
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
