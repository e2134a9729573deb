"""A batch of the node-join queue: one DescribeInstances call for the instances the batch names,
then the records applied in parallel within the function's time. join.py decides each event."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from prefetcher import clients
from prefetcher.eks_tags import Membership, membership

DESCRIBE_FILTER_MAX = 200  # values per DescribeInstances filter
# A batch's records are applied this many at a time. One record makes about 9 AWS calls; at the
# design point of 1 s a call (throttled and retried, 10 to 20 times the usual latency) a batch of
# 25 took 47 s, within the function's 120 s (docs/scale.md).
WORKERS = 8
# No record is started with less than this share of the function's time left (a sixth of 120 s:
# a record's worst case at 2 s a call): it is reported failed and the queue delivers it again.
RECORD_SHARE = 1 / 6


class Record(Protocol):
    """An SQS record as the batch needs it (Powertools' SQSRecord)."""

    @property
    def message_id(self) -> str: ...

    @property
    def raw_event(self) -> dict[str, Any]: ...


def receive_count(raw: dict[str, Any]) -> int:
    """How many times SQS has delivered this record (1 the first time)."""
    return int(raw.get("attributes", {}).get("ApproximateReceiveCount") or "1")


def instance_ids(records: Iterable[dict[str, Any]]) -> list[str]:
    """The instance ids a batch's bodies name (the record handler rejects malformed ones)."""
    ids = []
    for record in records:
        try:
            instance_id = json.loads(record["body"])["detail"]["instance-id"]
        except (KeyError, TypeError, ValueError):
            continue
        if isinstance(instance_id, str) and instance_id.startswith("i-") and len(instance_id) < 32:
            ids.append(instance_id)
    return ids


@dataclass
class BatchOutcome:
    """What became of each record of a batch: its action, or the error that makes it retried."""

    actions: Counter[str] = field(default_factory=Counter)
    errors: dict[str, Exception] = field(default_factory=dict)

    def report(self, record: Record) -> str:
        """For Powertools' BatchProcessor: raising makes the record a batch item failure."""
        error = self.errors.get(record.message_id)
        if error is not None:
            raise error
        return "applied"


def apply_batch(
    records: list[Any],
    apply: Callable[[Any], str],
    *,
    remaining_ms: Callable[[], int],
    workers: int = WORKERS,
) -> BatchOutcome:
    """Apply every record, `workers` at a time, records on their last receives first. A record
    that would start with less than RECORD_SHARE of the function's time left is not started (it
    fails and comes back), so the batch ends inside the function's timeout."""
    outcome = BatchOutcome()
    lock = threading.Lock()
    reserve = remaining_ms() * RECORD_SHARE

    def one(record: Any) -> None:
        action, error = "", None  # type: str, Exception | None
        if remaining_ms() < reserve:
            error = TimeoutError("not started: too little of the function's time was left; delivered again")
        else:
            try:
                action = apply(record)
            except Exception as failure:  # noqa: BLE001 - reported per record; the queue retries it
                error = failure
        with lock:
            if error is not None:
                outcome.errors[record.message_id] = error
            else:
                outcome.actions[action] += 1

    ordered = sorted(records, key=lambda record: -receive_count(record.raw_event))
    if len(ordered) <= 1 or workers <= 1:
        for record in ordered:
            one(record)
    else:
        with ThreadPoolExecutor(max_workers=min(workers, len(ordered))) as pool:
            list(pool.map(one, ordered))
    return outcome


def describe_memberships(instance_ids: Iterable[str]) -> dict[str, Membership | None]:
    """Which cluster each instance belongs to, from its tags: one DescribeInstances call for up
    to 200 instances (a filter, not InstanceIds: an id that no longer exists is not an error)."""
    ids = sorted(set(instance_ids))
    found: dict[str, Membership | None] = dict.fromkeys(ids)
    ec2 = clients.client("ec2")
    for start in range(0, len(ids), DESCRIBE_FILTER_MAX):
        chunk = ids[start : start + DESCRIBE_FILTER_MAX]
        token: str | None = None
        while True:
            answer = ec2.describe_instances(
                Filters=[{"Name": "instance-id", "Values": chunk}],
                MaxResults=1000,
                **({"NextToken": token} if token else {}),
            )
            for reservation in answer.get("Reservations", []):
                for instance in reservation.get("Instances", []):
                    tags = {t["Key"]: t["Value"] for t in instance.get("Tags", [])}
                    found[instance["InstanceId"]] = membership(tags)
            token = answer.get("NextToken")
            if not token:
                break
    return found
