"""NodeJoinFunction: EC2 instance state changes (through the node-join queue). A node of a target
cluster that starts gets every current image of its cluster once its SSM agent is reachable; a
node that stops or terminates leaves coverage. One DescribeInstances call per batch; the records
of a batch are applied in parallel, within the function's time."""

from __future__ import annotations

import os
from datetime import timedelta
from functools import partial
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig, idempotent_function
from aws_lambda_powertools.utilities.typing import LambdaContext
from prefetcher import clients, deadletter, join, join_batch
from prefetcher.eks_tags import Membership
from prefetcher.events import InstanceStateEvent
from prefetcher.intake import Rejected, parse_or_quarantine
from prefetcher.observability import traced
from prefetcher.settings import JoinSettings
from prefetcher.store import AuditTable

SETTINGS = JoinSettings.from_environ(os.environ)
logger = Logger()
metrics = Metrics()
TABLE = AuditTable(SETTINGS.table_name, history_ttl=timedelta(days=SETTINGS.history_ttl_days))
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
ONCE = IdempotencyConfig(event_key_jmespath="id", raise_on_no_idempotency_key=True, expires_after_seconds=86_400)
PERSISTENCE = TABLE.idempotency.for_function("NodeJoinFunction")


class Quarantined(Exception):
    """The event was kept in the dead-letter queue with its reason (undeliverable, not
    permitted): raised through the idempotent function so that its record is dropped and a
    redrive, once the cause is fixed, applies the event again."""

    def __init__(self, result: dict[str, Any]) -> None:
        super().__init__(result["reason"])
        self.result = result


@idempotent_function(  # type: ignore[untyped-decorator]
    data_keyword_argument="event", persistence_store=PERSISTENCE, config=ONCE
)
def apply_once(event: InstanceStateEvent, record: SQSRecord, members: dict[str, Membership | None]) -> dict[str, Any]:
    attempt = join_batch.receive_count(record.raw_event)

    def back_off(seconds: int) -> None:
        clients.client("sqs").change_message_visibility(
            QueueUrl=SETTINGS.join_queue_url, ReceiptHandle=record.receipt_handle, VisibilityTimeout=seconds
        )

    def give_up(reason: str, error_type: str) -> None:
        deadletter.quarantine(SETTINGS.dead_letter_queue_url, record.body, reason, "NodeJoinFunction", error_type)

    result = join.handle_state(
        event, SETTINGS, TABLE, members=members, attempt=attempt, back_off=back_off, give_up=give_up
    ).as_dict()
    if result["action"] in join.QUARANTINED:
        raise Quarantined(result)
    return result


def apply_record(record: SQSRecord, members: dict[str, Membership | None]) -> str:
    """One record: its action, or an exception that makes the queue deliver it again."""
    event = parse_or_quarantine(record.body, InstanceStateEvent, SETTINGS.dead_letter_queue_url, "NodeJoinFunction")
    if isinstance(event, Rejected):
        return "rejected"
    try:
        result: dict[str, Any] = apply_once(event=event, record=record, members=members)
    except Quarantined as kept:
        return str(kept.result["action"])
    except Exception as error:
        logger.warning(
            "state change not applied; the queue will retry it",
            extra={"reason": str(error), "error_type": type(error).__name__, "message_id": record.message_id},
        )
        if join_batch.receive_count(record.raw_event) >= SETTINGS.join_max_attempts:
            # Its last receive: past it the queue would move it to the dead-letter queue with no
            # word of why. Record the node and keep the event with the reason instead.
            def give_up(reason: str, kind: str) -> None:
                deadletter.quarantine(SETTINGS.dead_letter_queue_url, record.body, reason, "NodeJoinFunction", kind)

            return join.give_up_on(
                event, TABLE, SETTINGS, members=members, reason=f"{type(error).__name__}: {error}", give_up=give_up
            ).action
        raise
    return str(result["action"])


@logger.inject_lambda_context(clear_state=True)
@traced(SETTINGS.tracing)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    records = event.get("Records", [])
    metrics.add_metric(name="NodeEventsReceived", unit=MetricUnit.Count, value=len(records))
    ONCE.register_lambda_context(context)
    members = join_batch.describe_memberships(join_batch.instance_ids(records))
    outcome = join_batch.apply_batch(
        [SQSRecord(raw) for raw in records],
        partial(apply_record, members=members),
        remaining_ms=context.get_remaining_time_in_millis,
    )
    # One value per action and batch (EMF takes 100 values a metric).
    for action, count in outcome.actions.items():
        metrics.add_metric(name=join.action_metric(action), unit=MetricUnit.Count, value=count)
    return dict(
        process_partial_response(event=event, record_handler=outcome.report, processor=processor, context=context)
    )
