"""NodeJoinFunction: EC2 instance state changes (through the node-join queue). A node of a target
cluster that starts gets every current image of its cluster once its SSM agent is reachable; a
node that stops or terminates leaves coverage. One DescribeInstances call per batch."""

from __future__ import annotations

import json
import os
from collections import Counter
from datetime import timedelta
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig, idempotent_function
from aws_lambda_powertools.utilities.typing import LambdaContext
from prefetcher import clients, deadletter, join
from prefetcher.edge import Rejected, parse_or_quarantine
from prefetcher.events import InstanceStateEvent
from prefetcher.fleet import Membership
from prefetcher.observability import traced
from prefetcher.settings import JoinSettings
from prefetcher.store import AuditTable, idempotency_records

SETTINGS = JoinSettings.from_environ(os.environ)
logger = Logger()
metrics = Metrics()
TABLE = AuditTable(SETTINGS.table_name, history_ttl=timedelta(days=SETTINGS.history_ttl_days))
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
ONCE = IdempotencyConfig(event_key_jmespath="id", raise_on_no_idempotency_key=True, expires_after_seconds=86_400)
PERSISTENCE = idempotency_records(SETTINGS.table_name, "NodeJoinFunction")
_batch: dict[str, Membership | None] = {}
_actions: Counter[str] = Counter()


def _instance_ids(event: dict[str, Any]) -> list[str]:
    ids = []
    for record in event.get("Records", []):
        try:
            instance_id = json.loads(record["body"])["detail"]["instance-id"]
        except (KeyError, TypeError, ValueError):
            continue  # the record handler rejects it with the reason
        if isinstance(instance_id, str) and instance_id.startswith("i-") and len(instance_id) < 32:
            ids.append(instance_id)
    return ids


@idempotent_function(  # type: ignore[untyped-decorator]
    data_keyword_argument="event", persistence_store=PERSISTENCE, config=ONCE
)
def apply_once(event: InstanceStateEvent, record: SQSRecord) -> dict[str, Any]:
    attempt = int(record.raw_event.get("attributes", {}).get("ApproximateReceiveCount") or "1")

    def back_off(seconds: int) -> None:
        clients.client("sqs").change_message_visibility(
            QueueUrl=SETTINGS.join_queue_url, ReceiptHandle=record.receipt_handle, VisibilityTimeout=seconds
        )

    def give_up(reason: str) -> None:
        deadletter.quarantine(
            SETTINGS.dead_letter_queue_url, record.body, reason, "NodeJoinFunction", "NodeUndeliverable"
        )

    result = join.handle_state(
        event, SETTINGS, TABLE, members=_batch, attempt=attempt, back_off=back_off, give_up=give_up
    )
    return result.as_dict()


def record_handler(record: SQSRecord) -> str:
    event = parse_or_quarantine(record.body, InstanceStateEvent, SETTINGS.dead_letter_queue_url, "NodeJoinFunction")
    if isinstance(event, Rejected):
        metrics.add_metric(name="EventsRejected", unit=MetricUnit.Count, value=1)
        return event.reason
    try:
        result: dict[str, Any] = apply_once(event=event, record=record)
    except Exception as error:
        logger.warning(
            "state change not applied; the queue will retry it",
            extra={"reason": str(error), "error_type": type(error).__name__, "message_id": record.message_id},
        )
        raise
    _actions[str(result["action"])] += 1
    return str(result["action"])


@logger.inject_lambda_context(clear_state=True)
@traced(SETTINGS.tracing)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    metrics.add_metric(name="NodeEventsReceived", unit=MetricUnit.Count, value=len(event.get("Records", [])))
    ONCE.register_lambda_context(context)
    _batch.clear()
    _batch.update(join.describe_memberships(_instance_ids(event)))
    _actions.clear()
    response = process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
    # One value per action and batch (a batch may hold 100 events; EMF takes 100 values a metric).
    for action, count in _actions.items():
        metrics.add_metric(name=f"NodeEvents{action.capitalize()}", unit=MetricUnit.Count, value=count)
    return dict(response)
