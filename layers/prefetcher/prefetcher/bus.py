"""EventBridge: put this service's own events on the default bus."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from prefetcher import clients
from prefetcher.errors import TransientError

SOURCE = "eks-image-prefetcher"
ENTRIES_PER_CALL = 10  # PutEvents' limit


@dataclass(frozen=True)
class BusEvent:
    detail_type: str
    detail: dict[str, Any]
    time: datetime
    resources: tuple[str, ...] = ()


def put_events(events: Sequence[BusEvent]) -> list[str]:
    """Put `events` on the default bus with our source; returns their event ids. An entry
    EventBridge did not take (FailedEntryCount) is an error: the caller's retry puts them all
    again (what was taken is then put twice: the consumers' window, docs/rollout-events.md)."""
    ids: list[str] = []
    for start in range(0, len(events), ENTRIES_PER_CALL):
        entries = [
            {
                "Source": SOURCE,
                "DetailType": event.detail_type,
                "Detail": json.dumps(event.detail, separators=(",", ":")),
                "Resources": list(event.resources),
                "Time": event.time,
            }
            for event in events[start : start + ENTRIES_PER_CALL]
        ]
        answer = clients.client("events").put_events(Entries=entries)
        if answer.get("FailedEntryCount"):
            failed = [e for e in answer.get("Entries", []) if e.get("ErrorCode")]
            raise TransientError(f"PutEvents did not take {len(failed)} of {len(entries)} events: {failed[:3]}")
        ids += [str(entry.get("EventId", "")) for entry in answer.get("Entries", [])]
    return ids
