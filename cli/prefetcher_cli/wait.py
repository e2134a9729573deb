"""`prefetcher wait IMAGE`: poll the audit table until, in each cluster, enough live nodes hold
the image's digest, or until it can no longer happen.

Each poll reads only by key (never a Scan): the image's own item (one GetItem: did its tag move
on?) and, per cluster, its live nodes and their records of the image (two Queries on gsi2, as
`prefetcher coverage` reads them). Before the push is recorded it also reads the tag's current
digest and each known cluster's catalog item (GetItems), once the digest and the clusters are
known it stops reading them.

Outcomes (the exit codes of `prefetcher wait`): REACHED 0; TIMED_OUT 1; UNREACHABLE 4 (so many
live nodes failed that the share asked for cannot be reached any more); MOVED 5 (the tag now
points to a newer digest: deploying it would pull an image no node was asked to prefetch)."""

from __future__ import annotations

import enum
import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from prefetcher.errors import PrefetcherError
from prefetcher.states import NodeState
from prefetcher.store import AuditTable, NodeImageRow

MIN_INTERVAL_SECONDS = 5.0


class Outcome(enum.IntEnum):
    REACHED = 0
    TIMED_OUT = 1
    UNREACHABLE = 4
    MOVED = 5


# A record in one of these states will not hold the image within this rollout (the fleet
# check's catch-up may still fix it later, but not while a pipeline waits).
FAILED_FOR_GOOD = frozenset(str(s) for s in NodeState if s.is_failure)


@dataclass(frozen=True)
class ClusterProgress:
    """One cluster at one poll."""

    cluster: str
    live: int  # live nodes (joined and not left, or sent a command)
    holding: int  # of them, those whose record of the digest is cached or present
    failed: int  # of them, those failed for good (FAILED_FOR_GOOD)
    needed: int  # how many must hold it for the share asked for
    failures: tuple[tuple[str, str, int], ...] = ()  # (state, reason, count), most frequent first

    @property
    def waiting(self) -> int:
        """Live nodes not yet done: no record yet, requested, pulling, or sent again."""
        return self.live - self.holding - self.failed

    @property
    def reached(self) -> bool:
        return self.holding >= self.needed

    @property
    def unreachable(self) -> bool:
        return self.holding + self.waiting < self.needed

    @property
    def percent(self) -> float:
        return round(100 * self.holding / self.live, 1) if self.live else 100.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "cluster": self.cluster,
            "live_nodes": self.live,
            "holding": self.holding,
            "percent": self.percent,
            "needed": self.needed,
            "failed": self.failed,
            "waiting": self.waiting,
            "failures": [{"state": s, "reason": r, "count": c} for s, r, c in self.failures],
            "reached": self.reached,
        }


@dataclass(frozen=True)
class Snapshot:
    """What one poll found."""

    image: str  # repository:tag or repository@digest, as asked
    repository: str
    tag: str
    digest: str  # "" while the tag's push is not recorded yet
    percent: float
    clusters: tuple[ClusterProgress, ...] = ()
    note: str = ""  # why there is nothing to show yet
    moved_to: str = ""  # the newer digest the tag points to now

    @property
    def outcome(self) -> Outcome | None:
        """Final, or None to poll again."""
        if self.moved_to:
            return Outcome.MOVED
        if any(c.unreachable for c in self.clusters):
            return Outcome.UNREACHABLE
        if self.clusters and all(c.reached for c in self.clusters):
            return Outcome.REACHED
        return None

    def as_dict(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "repository": self.repository,
            "tag": self.tag or None,
            "digest": self.digest or None,
            "coverage_asked": self.percent,
            "moved_to": self.moved_to or None,
            "note": self.note or None,
            "clusters": [c.as_dict() for c in self.clusters],
        }


def needed(live: int, percent: float) -> int:
    """Nodes that must hold the image for `percent` of `live` (rounded up)."""
    return min(live, math.ceil(live * percent / 100 - 1e-9))


def progress(cluster: str, live_ids: set[str], records: Sequence[NodeImageRow], percent: float) -> ClusterProgress:
    """A cluster's progress from its live nodes and their records of the digest."""
    live = live_ids | {r.instance_id for r in records}
    holding = [r for r in records if r.holds]
    failed = [r for r in records if not r.holds and r.state in FAILED_FOR_GOOD]
    reasons = Counter((r.state, r.reason or "") for r in failed)
    return ClusterProgress(
        cluster=cluster,
        live=len(live),
        holding=len(holding),
        failed=len(failed),
        needed=needed(len(live), percent),
        failures=tuple((state, reason, count) for (state, reason), count in reasons.most_common()),
    )


@dataclass
class Target:
    """What is waited for; the digest and the clusters are found once and then kept."""

    text: str
    repository: str
    tag: str
    digest: str
    percent: float
    clusters: list[str] = field(default_factory=list)  # empty: every cluster the push targeted
    chosen: bool = False  # clusters given with --cluster
    checked: bool = False  # the clusters given are known to the table


class UnknownClusterError(PrefetcherError):
    """A cluster given with --cluster was never sent an image: a typo, most likely."""


class Display(Protocol):
    def update(self, snapshot: Snapshot) -> None: ...

    def close(self, snapshot: Snapshot, outcome: Outcome) -> None: ...

    def abort(self) -> None: ...


def poll(table: AuditTable, target: Target) -> Snapshot:
    """One look at the table."""
    base = Snapshot(target.text, target.repository, target.tag, target.digest, target.percent)
    if not target.digest:
        current = table.queries.current_tag(target.repository, target.tag)
        if current is None:
            return _with(base, note=f"no push of {target.repository}:{target.tag} is recorded yet")
        target.digest = current.digest
        base = _with(base, digest=current.digest)
    meta = table.queries.image_meta(target.repository, target.digest)
    if meta is None:
        return _with(base, note=f"no push of {target.repository}@{target.digest} is recorded yet")
    tags = {target.tag} if target.tag else set(meta.tags)
    if meta.superseded_by and tags and tags <= meta.superseded_tags:
        return _with(base, moved_to=meta.superseded_by)
    if target.chosen and not target.checked:
        unknown = sorted(set(target.clusters) - set(table.queries.clusters()))
        if unknown:
            raise UnknownClusterError(
                f"no image was ever sent to cluster(s) {', '.join(unknown)} (known: "
                f"{', '.join(table.queries.clusters()) or 'none'})"
            )
        target.checked = True
    if not target.chosen and not target.clusters:
        target.clusters = _targeted(table, target.repository, target.digest, tags)
        if not target.clusters:
            return _with(base, note="no cluster's catalog holds this image yet (TargetClusters)")
    found = []
    for cluster in target.clusters:
        live = {n.instance_id for n in table.queries.live_nodes(cluster)}
        records = table.queries.coverage(cluster, target.repository, target.digest)
        found.append(progress(cluster, live, records, target.percent))
    return _with(base, clusters=tuple(found))


def _targeted(table: AuditTable, repository: str, digest: str, tags: set[str]) -> list[str]:
    """The clusters whose catalog has this digest current under one of its tags."""
    return sorted(
        cluster
        for cluster in table.queries.clusters()
        if any(
            (row := table.queries.cluster_image(cluster, repository, tag)) is not None and row.digest == digest
            for tag in sorted(tags)
        )
    )


def _with(snapshot: Snapshot, **changes: Any) -> Snapshot:
    return replace(snapshot, **changes)


def run(
    table: AuditTable,
    target: Target,
    display: Display,
    *,
    timeout: float,
    interval: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[Outcome, Snapshot]:
    """Poll every `interval` seconds until an outcome, or TIMED_OUT after `timeout` seconds."""
    deadline = clock() + timeout
    try:
        while True:
            snapshot = poll(table, target)
            display.update(snapshot)
            outcome = snapshot.outcome
            if outcome is None and clock() >= deadline:
                outcome = Outcome.TIMED_OUT
            if outcome is not None:
                display.close(snapshot, outcome)
                return outcome, snapshot
            sleep(max(0.0, min(interval, deadline - clock())))
    except BaseException:
        display.abort()  # Ctrl-C or an error: leave the terminal as it was
        raise
