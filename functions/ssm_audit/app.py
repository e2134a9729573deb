"""SsmAuditFunction: SSM invocation status events of our document (through the audit queue)
become per-image, per-node records in the audit table. Partial batch failures: a record that
cannot be applied yet is retried by the queue; a malformed one goes to the dead-letter queue.
One update per invocation and batch, the invocations of a batch in parallel."""

from __future__ import annotations

import os
from datetime import timedelta
from functools import partial
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from prefetcher import audit
from prefetcher.events import CommandInvocationEvent
from prefetcher.intake import parse_bodies
from prefetcher.observability import traced
from prefetcher.settings import AuditSettings
from prefetcher.store import AuditTable

SETTINGS = AuditSettings.from_environ(os.environ)
logger = Logger()
metrics = Metrics()
TABLE = AuditTable(SETTINGS.table_name, history_ttl=timedelta(days=SETTINGS.history_ttl_days))
# An entirely failed batch is reported item by item (same retry as raising, clearer logs).
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)

_STATE_METRICS = {
    "cached": "NodeImagesCached",
    "present": "NodeImagesPresent",
    "failed": "NodeImagesFailed",
    "timed-out": "NodeImagesTimedOut",
    "undeliverable": "NodeImagesUndeliverable",
    "skipped-disk": "NodeImagesSkippedDisk",
}
# States that are not a pull's outcome (so not in the pull failure rate, which reads the above):
# the catch-up's `given-up`, and `evicted` (written by an inventory: _VERIFIED_METRICS).
_OTHER_STATE_METRICS = {"given-up": "NodeImagesGivenUp", "evicted": "NodeImagesEvicted"}
# What an inventory's line did to a record (inventory.Reconcile; stale and nothing: no metric).
_VERIFIED_METRICS = {
    "refresh": "NodeImagesVerified",
    "present": "NodeImagesFoundPresent",
    "evict": "NodeImagesEvicted",
}


def record_handler(record: SQSRecord, outcome: audit.BatchOutcome) -> str:
    """Reports what the batch step decided for this message, from its own batch's `outcome`
    (raising makes it retried)."""
    error = outcome.errors.get(record.message_id)
    if error is not None:
        logger.warning(
            "status not applied; the queue will retry it",
            extra={"reason": str(error), "error_type": type(error).__name__, "message_id": record.message_id},
        )
        raise error
    result = outcome.results.get(record.message_id)
    return result.action if result else "rejected"


def apply_statuses(event: dict[str, Any]) -> audit.BatchOutcome:
    """Parse the batch's status events (malformed bodies to the dead-letter queue) and apply them."""
    batch = parse_bodies(
        event.get("Records", []), CommandInvocationEvent, SETTINGS.dead_letter_queue_url, "SsmAuditFunction"
    )
    for _ in batch.rejected:
        metrics.add_metric(name="EventsRejected", unit=MetricUnit.Count, value=1)
    outcome = audit.handle_batch(batch.valid, SETTINGS, TABLE)
    logger.info(
        "batch recorded",
        extra={"events": len(batch.valid), "applied": len(outcome.results), "retried": len(outcome.errors)},
    )
    applied = {id(result): result for result in outcome.results.values()}.values()
    for result in applied:
        metrics.add_metric(name="StatusEventsApplied", unit=MetricUnit.Count, value=1)
        if result.sent_again:
            metrics.add_metric(name="CommandsSentAgain", unit=MetricUnit.Count, value=len(result.sent_again))
        for _, done in result.verified:
            if str(done) in _VERIFIED_METRICS:
                metrics.add_metric(name=_VERIFIED_METRICS[str(done)], unit=MetricUnit.Count, value=1)
        for update in result.applied:
            name = _STATE_METRICS.get(str(update.state)) or _OTHER_STATE_METRICS.get(str(update.state))
            if name:
                metrics.add_metric(name=name, unit=MetricUnit.Count, value=1)
            if update.state.holds_image and update.finished_at:
                seconds = (update.finished_at - update.requested_at).total_seconds()
                metrics.add_metric(name="TimeToCachedSeconds", unit=MetricUnit.Seconds, value=max(seconds, 0))
    return outcome


@logger.inject_lambda_context(clear_state=True)
@traced(SETTINGS.tracing)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    metrics.add_metric(name="StatusEventsReceived", unit=MetricUnit.Count, value=len(event.get("Records", [])))
    outcome = apply_statuses(event)
    return dict(
        process_partial_response(
            event=event, record_handler=partial(record_handler, outcome=outcome), processor=processor, context=context
        )
    )
