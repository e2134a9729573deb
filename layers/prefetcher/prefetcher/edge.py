"""The edge of every handler: parse an event into its model, or keep it in the dead-letter queue
with the reason. Shared so that each path treats bad input the same way."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, TypeVar

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
