"""Intake of every handler: parse an event into its model, or keep it in the dead-letter queue
with the reason. Shared so that each path treats bad input the same way."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.parser import ValidationError, parse
from aws_lambda_powertools.utilities.parser.exceptions import InvalidModelTypeError
from pydantic import BaseModel

from prefetcher import deadletter

logger = Logger(child=True)

Model = TypeVar("Model", bound=BaseModel)


@dataclass(frozen=True)
class Rejected:
    reason: str
    dead_letter_message_id: str

    def as_dict(self) -> dict[str, str]:
        return {
            "action": "rejected",
            "reason": self.reason,
            "dead_letter_message_id": self.dead_letter_message_id,
        }


def parse_or_quarantine(raw: Any, model: type[Model], dead_letter_queue_url: str, source: str) -> Model | Rejected:
    """`raw` is a dict (an EventBridge event) or a str (an SQS body holding one)."""
    try:
        if isinstance(raw, str):
            raw = json.loads(raw)
        return parse(event=raw, model=model)
    except (ValidationError, InvalidModelTypeError, ValueError, TypeError) as error:
        reason = deadletter.validation_reason(error)
        body = raw if isinstance(raw, str) else json.dumps(raw, default=str)
        message_id = deadletter.quarantine(dead_letter_queue_url, body, reason, source)
        logger.error("event rejected", extra={"reason": reason, "dead_letter_message_id": message_id})
        return Rejected(reason=reason, dead_letter_message_id=message_id)


@dataclass(frozen=True)
class ParsedBatch(Generic[Model]):
    """The records of an SQS batch whose bodies parsed, by message id, and the rejected ones."""

    valid: list[tuple[str, Model]] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)


def parse_bodies(
    records: Iterable[dict[str, Any]], model: type[Model], dead_letter_queue_url: str, source: str
) -> ParsedBatch[Model]:
    """Each SQS record's body parsed into `model`, or kept in the dead-letter queue with the
    reason (`parse_or_quarantine`), in the batch's order."""
    batch: ParsedBatch[Model] = ParsedBatch()
    for record in records:
        parsed = parse_or_quarantine(record["body"], model, dead_letter_queue_url, source)
        if isinstance(parsed, Rejected):
            batch.rejected.append(parsed)
        else:
            batch.valid.append((record["messageId"], parsed))
    return batch
