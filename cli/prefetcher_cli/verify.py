"""`prefetcher verify [--cluster NAME]...`: ask for a fleet check now. Puts the event that
FleetCheckRequestRule routes to FleetCheckFunction (source `eks-image-prefetcher`, detail-type
`Fleet Check Requested`, detail `{"clusters": [...], "requested-by": "..."}`) on the default
event bus, with the operator's credentials (events:PutEvents)."""

from __future__ import annotations

import getpass
import json
import re
from typing import Any

from prefetcher import clients
from prefetcher.settings import CLUSTER_NAME

SOURCE = "eks-image-prefetcher"
DETAIL_TYPE = "Fleet Check Requested"


class VerifyError(ValueError):
    """The request could not be put (a bad cluster name, or EventBridge refused the entry)."""


def requester() -> str:
    """Who asked, in the characters the event's `requested-by` allows."""
    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        name = "unknown"
    return re.sub(r"[^A-Za-z0-9@._:/+=,-]", "-", name)[:256] or "unknown"


def request(clusters: list[str]) -> dict[str, Any]:
    """Put the request; returns what was requested and the event's id."""
    bad = [name for name in clusters if not re.match(CLUSTER_NAME, name)]
    if bad:
        raise VerifyError(f"not EKS cluster names: {', '.join(bad)}")
    detail = {"clusters": list(dict.fromkeys(clusters)), "requested-by": requester()}
    answer = clients.client("events").put_events(
        Entries=[{"Source": SOURCE, "DetailType": DETAIL_TYPE, "Detail": json.dumps(detail)}]
    )
    (entry,) = answer["Entries"]
    if answer.get("FailedEntryCount") or "EventId" not in entry:
        raise VerifyError(f"EventBridge refused the request: {entry.get('ErrorCode')}: {entry.get('ErrorMessage')}")
    return {"event_id": entry["EventId"], "source": SOURCE, "detail_type": DETAIL_TYPE, "detail": detail}
