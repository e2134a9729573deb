"""ImagePushFunction: an ECR push (EventBridge "ECR Image Action") becomes a catalog entry and
one SSM pull command per target cluster. Idempotent on the event id."""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig, idempotent_function
from aws_lambda_powertools.utilities.typing import LambdaContext
from prefetcher import push
from prefetcher.events import EcrImageActionEvent
from prefetcher.intake import Rejected, parse_or_quarantine
from prefetcher.observability import traced
from prefetcher.settings import ImagePushSettings
from prefetcher.store import AuditTable

SETTINGS = ImagePushSettings.from_environ(os.environ)
logger = Logger()
metrics = Metrics()
TABLE = AuditTable(SETTINGS.table_name, history_ttl=timedelta(days=SETTINGS.history_ttl_days))
PERSISTENCE = TABLE.idempotency.for_function("ImagePushFunction")

EVENT_ONCE = IdempotencyConfig(event_key_jmespath="id", raise_on_no_idempotency_key=True, expires_after_seconds=86_400)


@idempotent_function(  # type: ignore[untyped-decorator]
    data_keyword_argument="event", persistence_store=PERSISTENCE, config=EVENT_ONCE
)
def prefetch_pushed_image(event: EcrImageActionEvent) -> dict[str, Any]:
    result = push.handle_push(event, SETTINGS, TABLE)
    metrics.add_metric(name=f"Pushes{result.action.capitalize()}", unit=MetricUnit.Count, value=1)
    metrics.add_metric(name="CommandsSent", unit=MetricUnit.Count, value=len(result.commands))
    return result.as_dict()


@logger.inject_lambda_context(clear_state=True)
@traced(SETTINGS.tracing)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    metrics.add_metric(name="PushEventsReceived", unit=MetricUnit.Count, value=1)
    parsed = parse_or_quarantine(event, EcrImageActionEvent, SETTINGS.dead_letter_queue_url, "ImagePushFunction")
    if isinstance(parsed, Rejected):
        metrics.add_metric(name="EventsRejected", unit=MetricUnit.Count, value=1)
        return parsed.as_dict()
    EVENT_ONCE.register_lambda_context(context)
    result: dict[str, Any] = prefetch_pushed_image(event=parsed)
    return result
