"""Shared fixtures. Real local components, started once per session: DynamoDB Local (Java, from
the npm package) and moto in server mode. Each test that needs AWS gets its own stack (its own
table and queues) on a freshly reset moto."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from prefetcher import clients

from tests.helpers import ROOT


@pytest.fixture(autouse=True)
def iam_enforced() -> Iterator[None]:
    """AWS authorises every call a function makes against its role; the local stack does too
    (devtools/local_stack/iam.py). A call the role does not allow fails the test that made it,
    naming the function, the action and the resource (tests that exercise AWS's own
    AccessDenied declare it with `iam.expect_denied`)."""
    from devtools.local_stack import iam

    iam.ledger.mark()
    yield
    violations = iam.ledger.violations()
    if violations:
        shown = "\n".join(f"  {call.describe()}" for call in violations[:20])
        pytest.fail(f"{len(violations)} AWS call(s) that AWS would deny (template.yaml's policies):\n{shown}")


@pytest.fixture(scope="session")
def function_log() -> Iterator[Any]:
    """Where the functions' logs go during tests (one file: Powertools loggers are per process)."""
    path = ROOT / ".local" / "test-functions.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as log:
        yield log


@pytest.fixture(scope="session")
def servers() -> Iterator[Any]:
    from devtools.local_stack.servers import Servers

    started = Servers().start()
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture
def aws_env(servers: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """Point this process's clients at the local stack."""
    env = servers.environment()
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    clients.reset()
    yield env
    clients.reset()


@pytest.fixture
def stack(servers: Any, aws_env: dict[str, str], function_log: Any, request: pytest.FixtureRequest) -> Any:
    """template.yaml deployed on the local stack, with its own names."""
    from devtools.local_stack.stack import LocalStack

    servers.reset_moto()
    overrides = getattr(request, "param", {}) or {}
    deployed = LocalStack(
        servers,
        name=f"t{uuid.uuid4().hex[:10]}",
        overrides={"TargetClusters": "ml-prod,ml-batch", **overrides},
        log=function_log,
        visibility_timeout=1,
    ).deploy()
    return deployed
