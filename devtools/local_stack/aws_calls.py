"""Hooks on the AWS clients that prefetcher.clients makes (the functions' and the CLI's): see, and
count, every call they make. The tests count calls with `CallCounter`, the benchmarks with a
`CallCounter` that also reads what DynamoDB scanned, and the fault-injection harness injects its
faults through `hooked_clients`."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from prefetcher import clients


@contextmanager
def hooked_clients(attach: Callable[[str, Any], None]) -> Iterator[None]:
    """In the block, every client prefetcher.clients makes gets `attach(service, client)` first
    (on botocore's event system). The clients made before the block are dropped when it starts,
    the ones made in it when it ends, so that no call escapes the hook and none is seen after."""
    clients.reset()
    remove = clients.on_create(attach)
    try:
        yield
    finally:
        remove()
        clients.reset()


def operation_name(event_name: str) -> str:
    """`before-parameter-build.ssm.SendCommand` -> `ssm.SendCommand`."""
    return ".".join(event_name.split(".")[1:])


class CallCounter:
    """The AWS calls made through prefetcher.clients, by `service.Operation`, with their API
    parameters when `keep_params` is set. Use as a context manager (`with CallCounter() as c:`)
    or pass `attach` to `hooked_clients`."""

    def __init__(self, *, keep_params: bool = True) -> None:
        self.calls: Counter[str] = Counter()
        self.params: dict[str, list[dict[str, Any]]] = {}
        self.keep_params = keep_params
        self._lock = threading.Lock()  # the audit path and the benchmarks call from threads
        self._hooked = ExitStack()

    def __enter__(self) -> CallCounter:
        self._hooked.enter_context(hooked_clients(self.attach))
        return self

    def __exit__(self, *exc: object) -> None:
        self._hooked.close()

    def attach(self, _service: str, client: Any) -> None:
        client.meta.events.register("before-parameter-build", self._count)

    def _count(self, params: dict[str, Any], event_name: str, **_kwargs: Any) -> None:
        operation = operation_name(event_name)
        with self._lock:
            self.calls[operation] += 1
            if self.keep_params:
                self.params.setdefault(operation, []).append(params)

    def count(self, operation: str) -> int:
        return self.calls[operation]

    def total(self, prefix: str = "") -> int:
        return sum(count for name, count in self.calls.items() if name.startswith(prefix))
