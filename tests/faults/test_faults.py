"""1,000 events per path at a 20% fault rate, through the real retry machinery: nothing lost,
nothing applied twice. The figures go to .local/reliability.json (`make reliability` turns them
into docs/reliability.md)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.faults import paths
from tests.helpers import ROOT

RESULTS = ROOT / ".local" / "reliability.json"

pytestmark = pytest.mark.slow


def save(result: paths.PathResult) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    current: dict[str, Any] = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    current[result.path] = result.as_dict()
    RESULTS.write_text(json.dumps(current, indent=2, sort_keys=True))


@pytest.mark.parametrize("run", [paths.run_push, paths.run_join, paths.run_audit], ids=["push", "join", "audit"])
def test_a_thousand_events_at_twenty_percent_faults_lose_nothing_and_apply_nothing_twice(
    servers, aws_env, function_log, run
):
    result = run(servers, function_log)
    save(result)
    assert result.sent == 1000
    assert sum(result.faults.values()) >= 0.15 * result.aws_calls  # the faults really happened
    assert result.lost == 0, result
    assert result.applied_twice == 0, result
    assert result.applied_once + result.dead_lettered == result.sent
