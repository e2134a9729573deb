"""RolloutEventsFunction: SSM's `EC2 Command Status-change Notification` for our document
(through the rollout queue) becomes, once per push command, an `Image Prefetch Rollout
Completed` event on the default bus. Partial batch failures: a command the audit table has not
caught up with is retried by the queue; a malformed body goes to the dead-letter queue.
Idempotent on the command id (a duplicate SSM event emits nothing)."""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig, idempotent_function
from aws_lambda_powertools.utilities.typing import LambdaContext
from prefetcher import rollout
from prefetcher.events import CommandStatusEvent
from prefetcher.intake import Rejected, parse_or_quarantine
from prefetcher.observability import traced
from prefetcher.settings import RolloutSettings
from prefetcher.store import AuditTable

SETTINGS = RolloutSettings.from_environ(os.environ)
logger = Logger()
metrics = Metrics()
TABLE = AuditTable(SETTINGS.table_name, history_ttl=timedelta(days=SETTINGS.history_ttl_days))
PERSISTENCE = TABLE.idempotency.for_function("RolloutEventsFunction")
# Once per command, whatever event id SSM's (at-least-once) delivery gives each copy; kept as
# long as the queue keeps a message (4 days).
COMMAND_ONCE = IdempotencyConfig(
    event_key_jmespath="command_id", raise_on_no_idempotency_key=True, expires_after_seconds=345_600
)
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


@idempotent_function(  # type: ignore[untyped-decorator]
    data_keyword_argument="command", persistence_store=PERSISTENCE, config=COMMAND_ONCE
)
def announce(command: dict[str, str], event: CommandStatusEvent, receive_count: int) -> dict[str, Any]:
    outcome = rollout.handle_command_status(event, SETTINGS, TABLE, receive_count=receive_count)
    metrics.add_metric(name=f"RolloutCommands{outcome.action.capitalize()}", unit=MetricUnit.Count, value=1)
    if outcome.action == "emitted":
        metrics.add_metric(name="RolloutEventsPut", unit=MetricUnit.Count, value=len(outcome.event_ids))
    logger.info("rollout command handled", extra={"command_id": command["command_id"], **outcome.as_dict()})
    return outcome.as_dict()


def record_handler(record: SQSRecord) -> str:
    """Raising makes the queue retry the record (the audit table has not caught up, or AWS failed)."""
    parsed = parse_or_quarantine(
        record.body, CommandStatusEvent, SETTINGS.dead_letter_queue_url, "RolloutEventsFunction"
    )
    if isinstance(parsed, Rejected):
        metrics.add_metric(name="EventsRejected", unit=MetricUnit.Count, value=1)
        return "rejected"
    receive_count = int(record.attributes.approximate_receive_count or 1)
    try:
        result: dict[str, Any] = announce(
            command={"command_id": parsed.detail.command_id}, event=parsed, receive_count=receive_count
        )
    except rollout.AuditNotCaughtUpError as error:
        metrics.add_metric(name="RolloutCommandsDeferred", unit=MetricUnit.Count, value=1)
        logger.info("the audit table has not caught up; the queue will retry", extra={"reason": str(error)})
        raise
    return str(result["action"])


@logger.inject_lambda_context(clear_state=True)
@traced(SETTINGS.tracing)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    metrics.add_metric(name="CommandStatusEventsReceived", unit=MetricUnit.Count, value=len(event.get("Records", [])))
    COMMAND_ONCE.register_lambda_context(context)
    return dict(
        process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
    )
