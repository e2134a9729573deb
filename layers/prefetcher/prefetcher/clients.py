"""The one place that builds AWS clients.

Clients are created lazily, on first use, and reused for the life of the process (across Lambda
invocations). Endpoints come from boto3's own configuration (`AWS_ENDPOINT_URL`,
`AWS_ENDPOINT_URL_<SERVICE>`), so the cloud and the local stack share one code path. Retry
behaviour comes from `AWS_RETRY_MODE` / `AWS_MAX_ATTEMPTS`, which template.yaml sets for every
function (standard mode), so the retry budget lives in one reviewed place.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import boto3
from botocore.config import Config

from prefetcher import __version__

_CONFIG = Config(
    connect_timeout=3,
    read_timeout=10,
    user_agent_extra=f"eks-image-prefetcher/{__version__}",
)

_lock = threading.Lock()
# One session for every client: a session loads botocore's data files (endpoints, partitions,
# retry rules, service models) once and caches them, so the second client of a cold start costs a
# fraction of the first (docs/benchmarks.md, "Cold start").
_session: boto3.session.Session | None = None
_clients: dict[tuple[str, str | None, int | None], Any] = {}
_on_create: list[Callable[[str, Any], None]] = []


def client(service: str, region: str | None = None, attempts: int | None = None) -> Any:
    """Return the shared client for `service` (created on first use). `attempts` overrides the
    retry budget (1: no automatic retries, for calls that are not safe to repeat blindly)."""
    key = (service, region, attempts)
    found = _clients.get(key)
    if found is not None:
        return found
    global _session
    with _lock:  # a session is not thread-safe; its clients are
        found = _clients.get(key)
        if found is None:
            config = _CONFIG if attempts is None else _CONFIG.merge(Config(retries={"total_max_attempts": attempts}))
            if _session is None:
                _session = boto3.session.Session()
            found = _session.client(service, region_name=region, config=config)  # type: ignore[call-overload]
            for hook in _on_create:
                hook(service, found)
            _clients[key] = found
    return found


def on_create(hook: Callable[[str, Any], None]) -> Callable[[], None]:
    """Call `hook(service, client)` for every client created from now on (benchmarks count
    calls and the fault-injection tests inject errors this way). Returns a function that
    removes the hook."""
    _on_create.append(hook)

    def remove() -> None:
        if hook in _on_create:
            _on_create.remove(hook)

    return remove


def reset() -> None:
    """Forget every client (tests and the local stack call this when endpoints change)."""
    global _session
    with _lock:
        _clients.clear()
        _session = None  # endpoints and credentials may have changed
