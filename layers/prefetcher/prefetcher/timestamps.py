"""Time as the project writes and reads it: one place, so that every stored, sent or shown time
has the same shape.

- `iso`: what the audit table stores (UTC, milliseconds, `Z`): sortable as text.
- `event_time`: an EventBridge event's `time` (UTC, to the second, `Z`), as AWS writes it.
- `parse_iso`: reads either back (and the offsets AWS's APIs answer with).
- `aware`: a datetime without a zone is read as UTC (EventBridge and SSM times are UTC).
- `parse_api_time`: a time an AWS API answered with (a datetime from botocore, or text), or None.
"""

from __future__ import annotations

from datetime import UTC, datetime


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def event_time(moment: datetime | None = None) -> str:
    return (moment or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(value: str) -> datetime:
    return aware(datetime.fromisoformat(value.replace("Z", "+00:00")))


def aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def parse_api_time(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return aware(value)
    if isinstance(value, str) and value:
        try:
            return parse_iso(value)
        except ValueError:
            return None
    return None
