"""The inventory's result lines (issue 12's agent contract), the states it adds, and what one
line does to a record as stored (inventory.reconcile)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from prefetcher import commands, ssm
from prefetcher.agent_output import read_agent_output
from prefetcher.inventory import Reconcile, Verification, reconcile, verifications_for_status
from prefetcher.refs import ImageRef
from prefetcher.settings import AgentSettings
from prefetcher.states import Invocation, NodeState, updates_for_status, version

REGISTRY = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
IMAGE = ImageRef(REGISTRY, "ml/trainer", "sha256:" + "a" * 64, "v1")
OTHER = ImageRef(REGISTRY, "ml/tools", "sha256:" + "b" * 64, "v2")
T0 = datetime(2026, 11, 29, 10, 15, 1, 482000, tzinfo=UTC)
PULL = "5b2a7f64-1c0e-4c4e-9a55-3f1d2a6b7c80"
INVENTORY = "6c3b8075-2d1f-4d5f-8b66-402e3b7c8d91"


def line(image: ImageRef, outcome: str, **extra: object) -> str:
    fields = {"image": image.pinned, "digest": image.digest, "tag": image.tag, "outcome": outcome, "bytes": 1000,
              "seconds": 0, "error": ""}  # fmt: skip
    return json.dumps({**fields, **extra}, separators=(",", ":"))


def test_old_lines_without_pinned_still_parse_and_new_ones_carry_it():
    # Given a line of an agent older than the pin, and a pull line and an inventory line of a newer one
    stdout = "\n".join([line(IMAGE, "pulled"), line(OTHER, "present", pinned=True)]) + "\n"
    # When the output is read
    results = read_agent_output(stdout).results
    # Then both parse; the old line counts as not pinned
    assert (results[IMAGE.pinned].outcome, results[IMAGE.pinned].pinned) == ("pulled", False)
    assert (results[OTHER.pinned].outcome, results[OTHER.pinned].pinned) == ("present", True)


def test_an_inventory_output_gives_absent_lines_and_the_disk():
    # Given an inventory's output: a present and an absent line, then the disk line with `more`
    disk = {"disk": {"path": "/var/lib/containerd", "free_bytes": 7 << 30, "total_bytes": 80 << 30}, "more": 3}
    stdout = "\n".join([line(IMAGE, "present", pinned=True), line(OTHER, "absent", bytes=0), json.dumps(disk)])
    # When it is read
    output = read_agent_output(stdout + "\n")
    # Then the absent line is a result, and the disk line is the run's, not an image's
    assert output.results[OTHER.pinned].outcome == "absent"
    assert output.disk is not None and (output.disk.free_bytes, output.disk.total_bytes) == (7 << 30, 80 << 30)
    assert output.disk.path == "/var/lib/containerd" and output.more == 3
    assert len(output.results) == 2


def test_an_absent_line_in_a_pulls_output_is_not_a_pull_result():
    # Given a pull whose output says `absent` for its image (an inventory's word)
    invocation = Invocation("Success", "Success", 0, line(IMAGE, "absent") + "\n", "", T0, T0)
    # When the status is turned into updates
    (update,) = updates_for_status(status="Success", observed_at=T0, requested_at=T0, command_id=PULL,
                                   instance_id="i-0a1b2c3d4e5f60001", cluster="ml-prod", images=[IMAGE],
                                   invocation=invocation)  # fmt: skip
    # Then the image is unknown (sent again), not held
    assert update.state is NodeState.UNKNOWN


def test_the_new_states_and_where_they_count():
    # Given the states an inventory and the catch-up add
    # Then evicted and given-up end a record and do not hold the image; only given-up is a failure
    assert NodeState("evicted").terminal and not NodeState("evicted").holds_image
    assert not NodeState.EVICTED.is_failure
    assert NodeState("given-up").terminal and NodeState.GIVEN_UP.is_failure


def test_the_line_bound_leaves_room_for_the_pinned_field():
    # Given the longest pull line an agent with the pin can print
    longest = line(IMAGE, "skipped-disk", bytes=9_223_372_036_854_775_807, seconds=172800.999,
                   error="x" * commands.MAX_ERROR, pinned=False)  # fmt: skip
    # Then it fits the senders' bound
    assert len(longest) + 1 <= commands.line_bound(IMAGE)


def test_the_stacks_pin_setting_reaches_every_command_as_pin_images():
    # Given the senders' settings as the template passes them, pins on (the default) and off
    on = AgentSettings.model_validate({"DOCUMENT_NAME": "prefetch-doc"})
    off = AgentSettings.model_validate({"DOCUMENT_NAME": "prefetch-doc", "PIN_IMAGES": "false"})
    # When a pull's and an inventory's parameters are built
    # Then each carries PinImages as the document's allowedValues spell it
    assert ssm.agent_parameters([IMAGE], on)["PinImages"] == ["true"]
    assert ssm.agent_parameters([IMAGE], off)["PinImages"] == ["false"]
    assert ssm.agent_parameters([IMAGE], off, ssm.INVENTORY)["PinImages"] == ["false"]


def test_an_inventory_sends_mode_inventory_and_a_pull_sends_no_mode():
    agent = AgentSettings(document_name="prefetch-doc")
    # Given the two modes
    # When their parameters are built
    inventory = ssm.agent_parameters([IMAGE], agent, ssm.INVENTORY)
    pull = ssm.agent_parameters([IMAGE], agent)
    # Then only the inventory names its mode (pull is the document's default)
    assert inventory["Mode"] == ["inventory"] and "Mode" not in pull
    assert inventory["Images"] == pull["Images"]
    with pytest.raises(ValueError, match="unknown mode"):
        ssm.agent_parameters([IMAGE], agent, "delete")


def found(present: bool, requested: datetime = T0, command: str = INVENTORY) -> Verification:
    return Verification(IMAGE, "i-0a1b2c3d4e5f60001", "ml-prod", command, requested, requested, present)


OLDER = version(T0 - timedelta(hours=1), PULL, NodeState.CACHED)
NEWER = version(T0 + timedelta(hours=1), PULL, NodeState.CACHED)


@pytest.mark.parametrize(
    ("stored_state", "stored_version", "present", "expected"),
    [
        (None, None, True, Reconcile.PRESENT),  # a node answering with an image it has no record of
        (None, None, False, Reconcile.NOTHING),  # absent and never recorded: the catch-up's business
        ("cached", OLDER, True, Reconcile.REFRESH),
        ("present", OLDER, True, Reconcile.REFRESH),
        ("cached", OLDER, False, Reconcile.EVICT),
        ("present", OLDER, False, Reconcile.EVICT),
        ("failed", OLDER, True, Reconcile.PRESENT),
        ("evicted", OLDER, True, Reconcile.PRESENT),
        ("failed", OLDER, False, Reconcile.NOTHING),
        ("in-progress", OLDER, False, Reconcile.NOTHING),
        ("cached", NEWER, False, Reconcile.STALE),  # a newer pull's record
        ("failed", NEWER, True, Reconcile.STALE),
        ("cached", found(True).version, True, Reconcile.STALE),  # this inventory again
    ],
)
def test_what_one_inventory_line_does_to_the_record_as_stored(stored_state, stored_version, present, expected):
    # Given a record as stored and what an inventory found
    # When they are reconciled
    # Then the record is refreshed, becomes present or evicted, or nothing is written
    assert reconcile(stored_state, stored_version, found(present)) is expected


def test_an_inventory_invocation_verifies_each_line_and_nothing_without_lines():
    # Given an inventory invocation that reported one image present (with its tag) and one absent
    stdout = "\n".join([line(IMAGE, "present", pinned=True), line(OTHER, "absent", bytes=0)]) + "\n"
    ended = Invocation("Success", "Success", 0, stdout, "", T0, T0 + timedelta(seconds=3))
    common = {"command_id": INVENTORY, "requested_at": T0, "cluster": "ml-prod", "instance_id": "i-0a1b2c3d4e5f60001",
              "observed_at": T0 + timedelta(seconds=9)}  # fmt: skip
    # When its end is read
    verified = verifications_for_status(invocation=ended, **common)
    # Then each line is one verification, at the invocation's end
    assert {(v.image, v.present, v.pinned) for v in verified} == {(IMAGE, True, True), (OTHER, False, False)}
    assert {v.verified_at for v in verified} == {T0 + timedelta(seconds=3)}
    # And an invocation that printed nothing (undeliverable, timed out) verifies nothing
    nothing = Invocation("TimedOut", "Delivery Timed Out", -1, "", "", None, None)
    assert verifications_for_status(invocation=nothing, **common) == []
    assert verifications_for_status(invocation=None, **common) == []
