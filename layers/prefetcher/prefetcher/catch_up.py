"""The catch-up's decisions (pure: no AWS calls): which live node lacks which current image of
its cluster, which of them may be sent again now, which wait for their backoff, and which have
spent their budget (`given-up`).

A node lacks an image when it has no record of it (or an expired one: the same), or a record
`failed`, `timed-out`, `undeliverable`, `unknown`, `skipped-disk` or `evicted`. A record that is
in flight (`requested`, `in-progress`), held (`cached`, `present`) or `given-up` is left alone:
a given-up record comes back only with a new digest (a new record) or an inventory that finds
the image (a newer version, `present`).

Attempts count catch-up commands since the image was last seen on the node: a record whose
`last_seen_at` is newer than its last catch-up (it was pulled, then evicted again) starts over.
After attempt n the next may go `backoff[n-1]` later (the last delay repeats): by default 1 h,
4 h, 16 h, 64 h."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from prefetcher.refs import ImageRef
from prefetcher.store.catch_ups import CatchUpRecord
from prefetcher.timestamps import iso

LACKING = frozenset({"failed", "timed-out", "undeliverable", "unknown", "skipped-disk", "evicted"})
HOLDING = frozenset({"cached", "present"})


@dataclass(frozen=True)
class Budget:
    max_attempts: int = 5
    backoff_seconds: tuple[int, ...] = (3600, 14400, 57600, 230400)

    def next_try(self, attempt: int, now: datetime) -> datetime:
        """When the catch-up after attempt `attempt` (1-based) may go."""
        delays = self.backoff_seconds or (0,)
        return now + timedelta(seconds=delays[min(attempt, len(delays)) - 1])


@dataclass(frozen=True)
class Lack:
    """One image a node lacks, and the catch-up attempts it already had."""

    image: ImageRef
    record: CatchUpRecord | None
    attempts: int

    @property
    def reason(self) -> str:
        if self.record is None:
            return "never reached"
        return self.record.catch_up_reason or self.record.reason or self.record.state


@dataclass
class NodePlan:
    instance_id: str
    send: list[Lack] = field(default_factory=list)  # sent now, in one command (or as few as fit)
    give_up: list[Lack] = field(default_factory=list)  # budget spent: recorded given-up
    waiting: list[Lack] = field(default_factory=list)  # in backoff


def is_live(record: CatchUpRecord | None, now: datetime) -> bool:
    """A record that has not expired (an expired one, not yet removed by TTL, counts as none)."""
    return record is not None and (record.expires_at is None or record.expires_at > now.timestamp())


def holds(record: CatchUpRecord | None, now: datetime) -> bool:
    return is_live(record, now) and record is not None and record.state in HOLDING


def attempts_so_far(record: CatchUpRecord | None) -> int:
    if record is None or not record.catch_up_at:
        return 0
    if record.last_seen_at and record.last_seen_at > record.catch_up_at:
        return 0  # seen on the node since the last catch-up: a new lack, a new budget
    return record.attempts


def plan(
    nodes: list[str],
    records: dict[ImageRef, dict[str, CatchUpRecord]],
    budget: Budget,
    now: datetime,
) -> list[NodePlan]:
    """Per live node, what it lacks of the current images (`records`: each current image's
    records by instance), split into send now, give up, and wait."""
    plans = []
    for instance_id in sorted(nodes):
        node = NodePlan(instance_id)
        for image, by_node in sorted(records.items()):
            stored = by_node.get(instance_id)
            record = stored if is_live(stored, now) else None
            if record is not None and record.state not in LACKING:
                continue
            # An expired record's catch-up bookkeeping still counts (the item is still there).
            lack = Lack(image, stored, attempts_so_far(stored))
            if lack.attempts >= budget.max_attempts:
                if record is not None:  # a record to mark; one that expired is a new lack
                    node.give_up.append(lack)
                    continue
                lack = Lack(image, stored, 0)
            if stored is not None and stored.next_try_at and stored.next_try_at > iso(now) and lack.attempts:
                node.waiting.append(lack)
            else:
                node.send.append(lack)
        if node.send or node.give_up or node.waiting:
            plans.append(node)
    return plans


def coverage_percent(nodes: list[str], records: dict[str, CatchUpRecord], now: datetime) -> float:
    """The share of live nodes that hold an image (100 with no live node: nothing to cover)."""
    if not nodes:
        return 100.0
    held = sum(1 for node in nodes if holds(records.get(node), now))
    return round(100.0 * held / len(nodes), 2)
