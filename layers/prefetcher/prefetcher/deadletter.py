"""Poison messages: an event that can never be processed (malformed or forged) goes straight to
the path's dead-letter queue, with the reason in its message attributes, instead of being
retried until the queue gives up. `prefetcher redrive` moves messages back once fixed."""

from __future__ import annotations

from prefetcher import clients
from prefetcher.errors import ConfigurationError

MAX_REASON = 1000
MAX_BODY = 250_000  # SQS messages may be 256 KiB with attributes


def quarantine(queue_url: str, body: str, reason: str, source: str, error_type: str = "InvalidEvent") -> str:
    """Send `body` to the dead-letter queue with why it was rejected; returns the message id."""
    if not queue_url:
        raise ConfigurationError("DEAD_LETTER_QUEUE_URL is not set: cannot keep a rejected event")
    answer = clients.client("sqs").send_message(
        QueueUrl=queue_url,
        MessageBody=body[:MAX_BODY] or "(empty)",
        MessageAttributes={
            "ErrorType": {"DataType": "String", "StringValue": error_type},
            "ErrorMessage": {"DataType": "String", "StringValue": reason[:MAX_REASON] or "invalid"},
            "Source": {"DataType": "String", "StringValue": source[:256]},
        },
    )
    return str(answer["MessageId"])


def validation_reason(error: Exception) -> str:
    """A one-line reason from a pydantic ValidationError (field paths and messages only; the
    rejected values are not echoed into logs)."""
    errors = getattr(error, "errors", None)
    if callable(errors):
        parts = []
        for problem in errors(include_input=False)[:10]:
            location = ".".join(str(part) for part in problem.get("loc", ()))
            parts.append(f"{location}: {problem.get('msg', '')}")
        return "event does not match the documented shape: " + "; ".join(parts)
    return f"event rejected: {type(error).__name__}"
