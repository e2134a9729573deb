"""FleetCheckFunction: the fleet check (through the fleet-check queue), from the schedule rule
(`Scheduled Event`) or an operator's request (`Fleet Check Requested`, `prefetcher verify`). Per
target cluster: catch-up of every live node lacking a current image, silent nodes that no longer
run leave coverage, an inventory; then the coverage metric. Idempotent on the event id."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from typing import Any

from aws_lambda_powertools import Logger, Metrics, single_metric
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig, idempotent_function
from aws_lambda_powertools.utilities.typing import LambdaContext
from prefetcher import fleet_check
from prefetcher.events import FleetCheckEvent
from prefetcher.intake import Rejected, parse_or_quarantine
from prefetcher.observability import traced
from prefetcher.settings import FleetCheckSettings
from prefetcher.store import AuditTable

SETTINGS = FleetCheckSettings.from_environ(os.environ)
logger = Logger()
metrics = Metrics()
TABLE = AuditTable(SETTINGS.table_name, history_ttl=timedelta(days=SETTINGS.history_ttl_days))
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
ONCE = IdempotencyConfig(event_key_jmespath="id", raise_on_no_idempotency_key=True, expires_after_seconds=86_400)
PERSISTENCE = TABLE.idempotency.for_function("FleetCheckFunction")
SOURCE = fleet_check.SOURCE


@idempotent_function(  # type: ignore[untyped-decorator]
    data_keyword_argument="event", persistence_store=PERSISTENCE, config=ONCE
)
def check_once(event: FleetCheckEvent, body: str) -> dict[str, Any]:
    return fleet_check.handle(event, body, SETTINGS, TABLE, datetime.now(UTC))


def record_handler(record: SQSRecord) -> str:
    event = parse_or_quarantine(record.body, FleetCheckEvent, SETTINGS.dead_letter_queue_url, SOURCE)
    if isinstance(event, Rejected):
        metrics.add_metric(name="EventsRejected", unit=MetricUnit.Count, value=1)
        return "rejected"
    result: dict[str, Any] = check_once(event=event, body=record.body)
    if result["rejected"]:
        metrics.add_metric(name="EventsRejected", unit=MetricUnit.Count, value=1)
    for cluster in result["clusters"]:
        minimum = cluster["min_coverage"]
        with single_metric(
            name="ClusterCoverageMinPercent", unit=MetricUnit.Percent, value=cluster["min_coverage"],
            default_dimensions={"service": metrics.service or "fleet-check", "Cluster": cluster["cluster"]},
        ):  # fmt: skip
            pass
        # The alarm's metric: one value per cluster, dimension service only (bounded cardinality).
        metrics.add_metric(name="CurrentImageCoverageMinPercent", unit=MetricUnit.Percent, value=minimum)
        metrics.add_metric(name="CatchUpCommandsSent", unit=MetricUnit.Count, value=len(cluster["sent"]))
        metrics.add_metric(name="CatchUpGivenUp", unit=MetricUnit.Count, value=cluster["given_up"])
        metrics.add_metric(name="NodesLeftSilent", unit=MetricUnit.Count, value=len(cluster["left"]))
    logger.info("fleet check done", extra={"event_id": event.id, "result": result})
    return "checked" if result["clusters"] else "rejected"


@logger.inject_lambda_context(clear_state=True)
@traced(SETTINGS.tracing)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    metrics.add_metric(name="FleetChecksReceived", unit=MetricUnit.Count, value=len(event.get("Records", [])))
    ONCE.register_lambda_context(context)
    return dict(
        process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
    )
