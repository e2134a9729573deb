"""prefetcher.clients: one client per service, all from one session, forgotten on reset."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prefetcher import clients


@pytest.fixture(autouse=True)
def fresh(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    clients.reset()
    yield
    clients.reset()


def test_a_service_has_one_client_and_every_client_shares_one_session_and_its_loaded_data():
    ssm = clients.client("ssm")
    assert clients.client("ssm") is ssm
    # botocore's loader holds the data files a session has read (endpoints, models): shared, they
    # are read once per cold start, not once per client.
    assert clients.client("sqs")._loader is ssm._loader
    assert clients.client("ssm", attempts=1)._loader is ssm._loader


def test_reset_forgets_the_clients_and_their_session():
    ssm = clients.client("ssm")
    clients.reset()
    again = clients.client("ssm")
    assert again is not ssm
    assert again._loader is not ssm._loader


def test_a_retry_budget_of_its_own_is_a_client_of_its_own():
    once = clients.client("ssm", attempts=1)
    assert once is not clients.client("ssm")
    assert once.meta.config.retries["total_max_attempts"] == 1
