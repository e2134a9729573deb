"""The catch-up's decisions (catch_up.plan, pure) and the fleet check's event model."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prefetcher import catch_up
from prefetcher.events import FleetCheckEvent
from prefetcher.refs import ImageRef
from prefetcher.settings import FleetCheckSettings
from prefetcher.store.catch_ups import CatchUpRecord
from prefetcher.store.rows import NodeRow
from prefetcher.timestamps import iso
from pydantic import ValidationError

NOW = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)
IMAGE = ImageRef("123456789012.dkr.ecr.us-east-1.amazonaws.com", "ml/trainer", "sha256:" + "a" * 64, "v1")
OTHER = ImageRef("123456789012.dkr.ecr.us-east-1.amazonaws.com", "ml/tools", "sha256:" + "b" * 64, "v2")
BUDGET = catch_up.Budget(max_attempts=3, backoff_seconds=(3600, 14400))
EVENTS = Path(__file__).resolve().parents[2] / "events"


def record(node: str, state: str, **fields) -> CatchUpRecord:
    return CatchUpRecord(instance_id=node, state=state, version="v", **fields)


def test_a_node_lacking_images_gets_one_plan_naming_exactly_what_it_lacks():
    # Given a node with no record of one image and a failed record of another, and a node that holds both
    records = {
        IMAGE: {"i-2": record("i-2", "cached")},
        OTHER: {"i-1": record("i-1", "failed", reason="403"), "i-2": record("i-2", "present")},
    }
    # When the catch-up plans
    plans = catch_up.plan(["i-1", "i-2"], records, BUDGET, NOW)
    # Then only the first node has a plan, sending both images
    (plan,) = plans
    assert plan.instance_id == "i-1" and sorted(lack.image for lack in plan.send) == sorted([IMAGE, OTHER])
    assert {lack.reason for lack in plan.send} == {"never reached", "403"}


@pytest.mark.parametrize("state", ["failed", "timed-out", "undeliverable", "unknown", "skipped-disk", "evicted"])
def test_every_state_that_does_not_hold_the_image_is_caught_up(state):
    # Given a record in a state that does not hold the image
    records = {IMAGE: {"i-1": record("i-1", state)}}
    # When the catch-up plans, Then it is sent
    (plan,) = catch_up.plan(["i-1"], records, BUDGET, NOW)
    assert [lack.image for lack in plan.send] == [IMAGE]


@pytest.mark.parametrize("state", ["requested", "in-progress", "cached", "present", "given-up"])
def test_held_in_flight_and_given_up_records_are_left_alone(state):
    # Given a record held, in flight or given up
    records = {IMAGE: {"i-1": record("i-1", state)}}
    # When the catch-up plans, Then nothing is planned
    assert catch_up.plan(["i-1"], records, BUDGET, NOW) == []


def test_an_expired_record_counts_as_none():
    # Given a cached record whose expiry has passed
    expired = record("i-1", "cached", expires_at=int((NOW - timedelta(days=1)).timestamp()))
    # When the catch-up plans, Then it is sent
    (plan,) = catch_up.plan(["i-1"], {IMAGE: {"i-1": expired}}, BUDGET, NOW)
    assert [lack.image for lack in plan.send] == [IMAGE]


def test_a_node_in_backoff_waits_and_one_past_it_is_sent_again():
    # Given two failed records after one catch-up each, one still in its backoff
    waiting = record("i-1", "failed", attempts=1, catch_up_at=iso(NOW - timedelta(minutes=30)),
                     next_try_at=iso(NOW + timedelta(minutes=30)))  # fmt: skip
    due = record("i-2", "failed", attempts=1, catch_up_at=iso(NOW - timedelta(hours=2)),
                 next_try_at=iso(NOW - timedelta(hours=1)))  # fmt: skip
    # When the catch-up plans
    plans = {
        p.instance_id: p for p in catch_up.plan(["i-1", "i-2"], {IMAGE: {"i-1": waiting, "i-2": due}}, BUDGET, NOW)
    }
    # Then the first waits, the second goes with its count
    assert [lack.image for lack in plans["i-1"].waiting] == [IMAGE] and not plans["i-1"].send
    assert [lack.attempts for lack in plans["i-2"].send] == [1]


def test_the_backoff_grows_and_its_last_delay_repeats():
    # Given the budget's delays, When the next tries are computed, Then 1 h, 4 h, 4 h
    delays = [BUDGET.next_try(n, NOW) - NOW for n in (1, 2, 3)]
    assert delays == [timedelta(hours=1), timedelta(hours=4), timedelta(hours=4)]


def test_a_spent_budget_gives_up_with_the_last_reason():
    # Given a record failed after three catch-ups (the budget)
    spent = record("i-1", "failed", attempts=3, reason="pull failed: 403", catch_up_at=iso(NOW - timedelta(days=1)))
    # When the catch-up plans
    (plan,) = catch_up.plan(["i-1"], {IMAGE: {"i-1": spent}}, BUDGET, NOW)
    # Then it gives up, with the record's reason, and sends nothing
    assert not plan.send and [(lack.image, lack.reason) for lack in plan.give_up] == [(IMAGE, "pull failed: 403")]


def test_an_image_seen_on_the_node_since_the_last_catch_up_starts_a_new_budget():
    # Given a record evicted after the catch-ups had pulled it (seen after the last catch-up)
    again = record("i-1", "evicted", attempts=3, catch_up_at=iso(NOW - timedelta(days=3)),
                   last_seen_at=iso(NOW - timedelta(days=1)), next_try_at=iso(NOW - timedelta(days=2)))  # fmt: skip
    # When the catch-up plans, Then it is sent as a first attempt
    (plan,) = catch_up.plan(["i-1"], {IMAGE: {"i-1": again}}, BUDGET, NOW)
    assert [lack.attempts for lack in plan.send] == [0]


def test_coverage_is_the_share_of_live_nodes_holding_the_image():
    # Given three live nodes, one holding, one evicted, one without a record
    records = {"i-1": record("i-1", "cached"), "i-2": record("i-2", "evicted")}
    # When coverage is computed, Then a third; and with no live node, nothing to cover
    assert catch_up.coverage_percent(["i-1", "i-2", "i-3"], records, NOW) == 33.33
    assert catch_up.coverage_percent([], {}, NOW) == 100.0


def test_a_node_has_missed_the_rounds_since_its_last_verification_or_its_join():
    from prefetcher.fleet_check import missed_rounds

    # Given a cluster's three earlier rounds, a day apart, and a node that joined before them
    rounds = [iso(NOW - timedelta(days=d)) for d in (3, 2, 1)]
    node = NodeRow(instance_id="i-1", joined_at=iso(NOW - timedelta(days=9)))
    answered_first = record("i-1", "cached", verified_at=iso(NOW - timedelta(days=3, hours=-1)))
    answered_last = record("i-1", "cached", verified_at=iso(NOW - timedelta(hours=20)))
    # When its missed rounds are counted
    # Then the rounds after its latest verification; none if it answered the last one
    assert missed_rounds(node, [], rounds) == 3
    assert missed_rounds(node, [answered_first], rounds) == 2
    assert missed_rounds(node, [answered_first, answered_last], rounds) == 0
    # And a node that joined after the rounds has missed none of them
    assert missed_rounds(NodeRow(instance_id="i-2", joined_at=iso(NOW - timedelta(hours=1))), [], rounds) == 0


def test_requested_clusters_outside_the_targets_are_rejected():
    from prefetcher.fleet_check import target_clusters

    settings = FleetCheckSettings.from_environ(
        {"TABLE_NAME": "audit", "DOCUMENT_NAME": "doc", "TARGET_CLUSTERS": "ml-prod,ml-batch"}
    )
    event = json.loads((EVENTS / "fleet-check-requested.json").read_text())
    event["detail"]["clusters"] = ["ml-prod", "nope"]
    # When the request is read, Then ml-prod is checked and nope rejected; a schedule checks every target
    assert target_clusters(FleetCheckEvent.model_validate(event), settings) == (["ml-prod"], ["nope"])
    scheduled = FleetCheckEvent.model_validate(json.loads((EVENTS / "events-scheduled.json").read_text()))
    assert target_clusters(scheduled, settings) == (["ml-prod", "ml-batch"], [])


@pytest.mark.parametrize(
    "change",
    [
        {"source": "aws.events", "detail-type": "Fleet Check Requested"},  # a forged pairing
        {"source": "eks-image-prefetcher", "detail-type": "Scheduled Event"},
        {"detail": {"clusters": ["ml-prod; rm -rf /"]}},
        {"detail": {"clusters": ["ml-prod"], "extra": 1}},
        {"detail": {"requested-by": "$(reboot)"}},
        {"source": "aws.ec2"},
    ],
)
def test_a_fleet_check_event_that_does_not_have_the_documented_shape_is_refused(change):
    # Given the request event with one field forged
    event = {**json.loads((EVENTS / "fleet-check-requested.json").read_text()), **change}
    # When the model reads it, Then it is refused
    with pytest.raises(ValidationError):
        FleetCheckEvent.model_validate(event)


def test_a_scheduled_event_with_a_detail_is_refused():
    event = json.loads((EVENTS / "events-scheduled.json").read_text())
    event["detail"] = {"clusters": ["ml-prod"]}
    with pytest.raises(ValidationError):
        FleetCheckEvent.model_validate(event)


def test_the_catch_up_settings_are_validated():
    base = {"TABLE_NAME": "audit", "DOCUMENT_NAME": "doc", "TARGET_CLUSTERS": "ml-prod"}
    settings = FleetCheckSettings.from_environ(base)
    assert (settings.catch_up_max_attempts, settings.backoff_seconds) == (5, (3600, 14400, 57600, 230400))
    from prefetcher.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="CATCH_UP_BACKOFF_SECONDS"):
        FleetCheckSettings.from_environ({**base, "CATCH_UP_BACKOFF_SECONDS": "1h"})
