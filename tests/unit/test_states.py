"""From SSM statuses and the agent's result lines to per-image node states; ordering of updates."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prefetcher.agent_output import parse_agent_output
from prefetcher.refs import ImageRef
from prefetcher.states import Invocation, NodeState, updates_for_status

DIGEST_A = "sha256:" + "a" * 64
DIGEST_B = "sha256:" + "b" * 64
REGISTRY = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
IMAGE_A = ImageRef(REGISTRY, "ml/trainer", DIGEST_A, "v1")
IMAGE_B = ImageRef(REGISTRY, "ml/tools", DIGEST_B, "v2")
T0 = datetime(2026, 11, 29, 10, 15, 1, 482000, tzinfo=UTC)
CMD1 = "5b2a7f64-1c0e-4c4e-9a55-3f1d2a6b7c80"
CMD2 = "6c3b8075-2d1f-4d5f-8b66-402e3b7c8d91"


def line(image: ImageRef, outcome: str, error: str = "", size: int = 1000, seconds: float = 2.5) -> str:
    return json.dumps(
        {
            "image": image.pinned,
            "digest": image.digest,
            "tag": image.tag,
            "outcome": outcome,
            "bytes": size,
            "seconds": seconds,
            "error": error,
        }
    )


def updates(
    status: str,
    invocation: Invocation | None = None,
    command: str = CMD1,
    requested=T0,
    images=(IMAGE_A,),
    last_try: bool = False,
):
    return updates_for_status(
        status=status,
        observed_at=requested + timedelta(seconds=30),
        requested_at=requested,
        command_id=command,
        instance_id="i-0a1b2c3d4e5f60001",
        cluster="ml-prod",
        images=list(images),
        invocation=invocation,
        **({"last_try": True} if last_try else {}),
    )


def test_pending_and_progress_states():
    assert [u.state for u in updates("Pending")] == [NodeState.REQUESTED]
    assert [u.state for u in updates("InProgress")] == [NodeState.IN_PROGRESS]
    (delayed,) = updates("Delayed")
    assert delayed.state == NodeState.IN_PROGRESS and "delayed" in delayed.reason


def test_success_takes_outcomes_bytes_and_seconds_from_the_agent_lines():
    out = line(IMAGE_A, "pulled", size=1_287_651_328, seconds=41.2) + "\n" + line(IMAGE_B, "present", size=10)
    result = updates(
        "Success", Invocation(status="Success", response_code=0, stdout="log\n" + out), images=(IMAGE_A, IMAGE_B)
    )
    assert [(u.state, u.bytes, u.seconds) for u in result] == [
        (NodeState.CACHED, 1_287_651_328, 41.2),
        (NodeState.PRESENT, 10, 2.5),
    ]


def test_a_failed_invocation_keeps_each_images_own_outcome_and_reason():
    out = (
        line(IMAGE_A, "skipped-disk", "only 900 MiB free on /var/lib/containerd, missing 1148 MiB")
        + "\n"
        + line(IMAGE_B, "failed", "ctr: failed to resolve reference: 401 Unauthorized")
    )
    result = updates(
        "Failed",
        Invocation(status="Failed", status_details="Failed", response_code=1, stdout=out),
        images=(IMAGE_A, IMAGE_B),
    )
    assert [(u.state, u.reason) for u in result] == [
        (NodeState.SKIPPED_DISK, "only 900 MiB free on /var/lib/containerd, missing 1148 MiB"),
        (NodeState.FAILED, "ctr: failed to resolve reference: 401 Unauthorized"),
    ]


@pytest.mark.parametrize(
    ("status", "details", "stderr", "state", "reason"),
    [
        ("Failed", "Undeliverable", "", NodeState.UNDELIVERABLE, "undeliverable"),
        ("TimedOut", "Delivery Timed Out", "", NodeState.UNDELIVERABLE, "delivery timed out"),
        ("TimedOut", "DeliveryTimedOut", "", NodeState.UNDELIVERABLE, "delivery timed out"),
        ("TimedOut", "Execution Timed Out", "", NodeState.TIMED_OUT, "execution timed out"),
        ("Cancelled", "Cancelled", "", NodeState.FAILED, "cancelled"),
        ("Failed", "Terminated", "", NodeState.FAILED, "terminated"),
        ("Failed", "Invalid Platform", "", NodeState.FAILED, "not Linux"),
        (
            "Failed",
            "Failed",
            "prefetch: rejected: MinFreeDiskMiB must be a whole number\n",
            NodeState.FAILED,
            "agent exited with code 2: prefetch: rejected: MinFreeDiskMiB must be a whole number",
        ),
    ],
)
def test_invocations_that_end_without_result_lines_get_a_readable_reason(status, details, stderr, state, reason):
    code = 2 if stderr else -1
    (update,) = updates(status, Invocation(status=status, status_details=details, response_code=code, stderr=stderr))
    assert update.state == state
    assert reason in update.reason


def test_an_image_the_node_did_not_report_is_unknown_not_cached():
    # Given an agent that exited 0 but printed no line for an image
    (update,) = updates("Success", Invocation(status="Success", response_code=0, stdout=""))
    # Then it is not recorded as held, nor as failed: it is unknown, to be sent again
    assert update.state == "unknown"
    assert not update.state.holds_image and not update.state.is_failure
    assert "no result line" in update.reason


def test_output_cut_by_the_ssm_agent_makes_the_images_past_the_cut_unknown():
    # Given 3 result lines, the output cut by the SSM agent inside the second (24,000 bytes kept:
    # 23,980 and the suffix)
    images = [ImageRef(REGISTRY, f"ml/model-{n}", "sha256:" + f"{n}" * 64, "v1") for n in range(3)]
    whole = "".join(line(image, "pulled") + "\n" for image in images)
    cut = whole[: len(line(images[0], "pulled")) + 30] + "--output truncated--"
    # When the status is Success (the agent exits 0) or Failed
    for status in ("Success", "Failed"):
        result = updates(status, Invocation(status=status, response_code=0, stdout=cut), images=images)
        # Then the first is cached, and the cut one and the missing one are unknown, not cached
        assert [u.state for u in result] == ["cached", "unknown", "unknown"]
        assert "cut at 24,000" in result[2].reason


def test_an_image_still_unreported_on_its_last_try_is_failed_with_why():
    (update,) = updates("Success", Invocation(status="Success", response_code=0, stdout=""), last_try=True)
    assert update.state == NodeState.FAILED
    assert "no result line" in update.reason and "sent again" in update.reason


def test_execution_timeout_keeps_the_lines_printed_before_the_kill():
    # Given an agent stopped at the execution timeout after it reported one of two images
    stdout = line(IMAGE_A, "pulled") + "\n"
    invocation = Invocation(status="TimedOut", status_details="Execution Timed Out", response_code=137, stdout=stdout)
    first, second = updates("TimedOut", invocation, images=(IMAGE_A, IMAGE_B))
    # Then the reported one is cached and the other timed out
    assert (first.state, second.state) == (NodeState.CACHED, NodeState.TIMED_OUT)


def test_the_failure_reason_is_the_scripts_own_not_the_ssm_agents_exit_line():
    # Given a script that failed (exit 3) with its own last line, to which the SSM agent appended
    # its own text (amazon-ssm-agent's runShellScript plugin)
    stderr = (
        "2026-11-29T10:15:02Z prefetch: 1 image(s), parallelism 3\n"
        "2026-11-29T10:15:03Z prefetch: neither ctr nor apiclient found: is this an EKS node with containerd?\n"
        "failed to run commands: exit status 3"
    )
    (update,) = updates("Failed", Invocation(status="Failed", status_details="Failed", response_code=3, stderr=stderr))
    assert update.state == NodeState.FAILED
    assert update.reason == (
        "agent exited with code 3: neither ctr nor apiclient found: is this an EKS node with containerd?"
    )


def test_a_fatal_line_on_stdout_is_the_reason():
    stdout = '{"fatal":"rejected: MinFreeDiskMiB must be a whole number of MiB"}\n'
    invocation = Invocation(status="Failed", status_details="Failed", response_code=2, stdout=stdout,
                            stderr="x" * 7980 + "--output truncated--")  # fmt: skip
    (update,) = updates("Failed", invocation)
    assert (update.state, update.reason) == (NodeState.FAILED, "rejected: MinFreeDiskMiB must be a whole number of MiB")


def test_an_invocation_the_ssm_agent_refused_before_the_script_says_so():
    # The agent fails the document when a parameter does not pass its allowedPattern (Go regexp):
    # status Failed, no step ran, nothing printed.
    (update,) = updates("Failed", Invocation(status="Failed", status_details="Failed", response_code=-1))
    assert update.state == NodeState.FAILED
    assert "before the script ran" in update.reason and "allowedPattern" in update.reason


def test_garbage_lines_are_ignored():
    assert parse_agent_output('{"outcome": 1}\nnot json {"outcome"\n{"image": "x"}') == {}


# ---- ordering: duplicated and reordered events never move a record backwards ---------------

TERMINALS = {
    "Success": Invocation(status="Success", response_code=0, stdout=line(IMAGE_A, "pulled")),
    "Failed": Invocation(
        status="Failed",
        status_details="Failed",
        response_code=1,
        stdout=line(IMAGE_A, "failed", "401 Unauthorized"),
    ),
    "TimedOut": Invocation(status="TimedOut", status_details="Execution Timed Out"),
    "Cancelled": Invocation(status="Cancelled", status_details="Cancelled"),
}
EXPECTED = {
    "Success": NodeState.CACHED,
    "Failed": NodeState.FAILED,
    "TimedOut": NodeState.TIMED_OUT,
    "Cancelled": NodeState.FAILED,
}


def apply_in_order(events):
    """The conditional write's rule: keep the update with the greatest version."""
    record = None
    for update in events:
        if record is None or record.version < update.version:
            record = update
    return record


@settings(max_examples=300)
@given(st.sampled_from(sorted(TERMINALS)), st.data())
def test_any_order_and_duplication_of_one_commands_events_ends_in_its_terminal_state(terminal, data):
    stream = [updates("Pending")[0], updates("InProgress")[0], updates(terminal, TERMINALS[terminal])[0]]
    shuffled = data.draw(st.lists(st.sampled_from(stream), min_size=1, max_size=12).map(lambda s: [*s, stream[2]]))
    order = data.draw(st.permutations(shuffled))
    assert apply_in_order(order).state == EXPECTED[terminal]


@settings(max_examples=300)
@given(st.data())
def test_a_newer_command_wins_over_any_event_of_an_older_one(data):
    later = T0 + timedelta(minutes=5)
    old = [updates(s, TERMINALS.get(s), CMD1, T0)[0] for s in ("Pending", "InProgress", "Failed")]
    new = [updates(s, TERMINALS.get(s), CMD2, later)[0] for s in ("Pending", "InProgress", "Success")]
    order = data.draw(st.permutations(old + new + data.draw(st.lists(st.sampled_from(old + new), max_size=6))))
    final = apply_in_order(order)
    assert (final.command_id, final.state) == (CMD2, NodeState.CACHED)
