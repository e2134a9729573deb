"""The fleet check (a schedule rule's event, or `prefetcher verify`), per target cluster:

1. read the cluster's current images (one Query), its live nodes (one Query on gsi2) and each
   image's records on them (one Query on gsi2 per image);
2. catch-up (catch_up.plan): each live node lacking a current image gets one command naming
   exactly what it lacks (send_once.send_to_node, by InstanceIds, exactly once per event, node
   and digests), counted against its budget on the record; a spent budget is `given-up`;
3. rounds: the cluster's round is recorded (one item per cluster); a live node that has not
   answered the rounds since its last verification has missed them; the nodes silent for
   `leave_after_rounds` rounds are
   looked up with ONE DescribeInstances for all of them, and those no longer running leave
   coverage (nodes.left, as a terminated event would have done);
4. the inventory (verify.send_inventory), keyed on the event id;
5. the coverage of each current image (live nodes holding / live nodes), for the metric.

Every step is idempotent on the event id: send claims, and conditional writes keyed on it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aws_lambda_powertools import Logger

from prefetcher import catch_up, clients, deadletter, send_once, verify
from prefetcher.errors import NodeNotReachableError, NotPermittedError
from prefetcher.events import FleetCheckEvent
from prefetcher.refs import ImageRef
from prefetcher.settings import FleetCheckSettings
from prefetcher.store import AuditTable, NodeRow
from prefetcher.store.catch_ups import CatchUpRecord

logger = Logger(child=True)
KIND = "catch-up"
SOURCE = "FleetCheckFunction"
DESCRIBE_FILTER_MAX = 200
RUNNING = frozenset({"pending", "running"})
Describe = Callable[[list[str]], dict[str, str]]


@dataclass
class ClusterCheck:
    cluster: str
    sent: list[str] = field(default_factory=list)  # catch-up command ids
    unreachable: list[str] = field(default_factory=list)  # nodes a catch-up could not reach
    given_up: int = 0
    waiting: int = 0
    left: list[str] = field(default_factory=list)
    inventory: list[str] = field(default_factory=list)
    coverage: dict[str, float] = field(default_factory=dict)  # repo@digest -> percent

    @property
    def min_coverage(self) -> float:
        return min(self.coverage.values(), default=100.0)


@dataclass
class FleetCheckResult:
    clusters: list[ClusterCheck] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)  # requested clusters that are not targets


def target_clusters(event: FleetCheckEvent, settings: FleetCheckSettings) -> tuple[list[str], list[str]]:
    """The clusters to check (all targets, or the requested ones) and the requested ones that
    are not target clusters (rejected, with a reason)."""
    targets = list(settings.selection.target_clusters)
    if not event.detail.clusters:
        return targets, []
    asked = list(dict.fromkeys(event.detail.clusters))
    return [c for c in asked if c in targets], [c for c in asked if c not in targets]


def instance_states(instance_ids: list[str]) -> dict[str, str]:
    """Each instance's state name, in one DescribeInstances call per 200 (a filter, so an id
    that no longer exists is not an error: it is simply missing from the answer)."""
    states: dict[str, str] = {}
    ec2 = clients.client("ec2")
    for start in range(0, len(instance_ids), DESCRIBE_FILTER_MAX):
        chunk = instance_ids[start : start + DESCRIBE_FILTER_MAX]
        pages = ec2.get_paginator("describe_instances").paginate(Filters=[{"Name": "instance-id", "Values": chunk}])
        for page in pages:
            for reservation in page.get("Reservations", []):
                for instance in reservation.get("Instances", []):
                    states[instance["InstanceId"]] = instance.get("State", {}).get("Name", "")
    return states


def handle(
    event: FleetCheckEvent, body: str, settings: FleetCheckSettings, table: AuditTable, now: datetime
) -> dict[str, Any]:
    """The function's work for one event: the fleet check of its clusters; requested clusters
    that are not target clusters are kept in the dead-letter queue with the reason (once: this
    runs under the event's idempotency)."""
    result = run(event, settings, table, now)
    if result.rejected:
        reason = f"not target clusters (TargetClusters): {', '.join(result.rejected)}"
        deadletter.quarantine(settings.dead_letter_queue_url, body, reason, SOURCE, "UnknownCluster")
        logger.error("fleet check request rejected", extra={"reason": reason, "event_id": event.id})
    return as_dict(result)


def run(
    event: FleetCheckEvent,
    settings: FleetCheckSettings,
    table: AuditTable,
    now: datetime,
    describe: Describe = instance_states,
) -> FleetCheckResult:
    clusters, rejected = target_clusters(event, settings)
    result = FleetCheckResult(rejected=rejected)
    for cluster in clusters:
        result.clusters.append(check_cluster(cluster, event.id, settings, table, now))
    leave_silent_nodes(result, table, describe, now)
    return result


def check_cluster(
    cluster: str, event_id: str, settings: FleetCheckSettings, table: AuditTable, now: datetime
) -> ClusterCheck:
    return _ClusterRun(ClusterCheck(cluster), event_id, settings, table, now).run()


def missed_rounds(node: NodeRow, records: list[CatchUpRecord], previous_rounds: list[str]) -> int:
    """The inventory rounds in a row that the node has not answered: the earlier rounds of its
    cluster (their times) since the later of its join and its last verification (an answer to a
    round verifies its records after that round was sent)."""
    since = max([node.joined_at or "", *(r.verified_at for r in records if r.verified_at)])
    return sum(1 for at in previous_rounds if at > since)


@dataclass
class _ClusterRun:
    check: ClusterCheck
    event_id: str
    settings: FleetCheckSettings
    table: AuditTable
    now: datetime
    lock: threading.Lock = field(default_factory=threading.Lock)  # the nodes' catch-ups run in threads

    @property
    def budget(self) -> catch_up.Budget:
        return catch_up.Budget(self.settings.catch_up_max_attempts, self.settings.backoff_seconds)

    def run(self) -> ClusterCheck:
        cluster, table = self.check.cluster, self.table
        images = table.catalog.current_images(cluster)
        nodes = table.queries.live_nodes(cluster)
        live = [n.instance_id for n in nodes]
        records = {image: table.catch_ups.records(cluster, image) for image in images}
        plans = catch_up.plan(live, records, self.budget, self.now)
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(self.catch_up, plans))
        if images:
            self.count_rounds(nodes, records)
            self.check.inventory = verify.send_inventory(
                table, self.settings.agent, cluster, key=self.event_id,
                node_groups=self.settings.selection.target_node_groups,
            )  # fmt: skip
        fresh = {image: table.catch_ups.records(cluster, image) for image in images} if plans else records
        self.check.coverage = {i.key: catch_up.coverage_percent(live, fresh[i], self.now) for i in images}
        return self.check

    def catch_up(self, node: catch_up.NodePlan) -> None:
        check, table = self.check, self.table
        given_up = sum(
            1
            for lack in node.give_up
            if lack.record is not None and table.catch_ups.given_up(lack.image, lack.record, lack.reason, self.now)
        )
        with self.lock:
            check.given_up += given_up
            check.waiting += len(node.waiting)
        if not node.send:
            return
        reason = ""
        try:
            sent = send_once.send_to_node(
                table, self.settings.agent, key=f"{KIND}#{self.event_id}", kind=KIND, cluster=check.cluster,
                instance_id=node.instance_id, images=sorted(lack.image for lack in node.send),
                event_id=self.event_id, comment=f"catch-up of {node.instance_id}",
                attempt=max(lack.attempts for lack in node.send) + 1,
            )  # fmt: skip
            with self.lock:
                check.sent += sent
        except (NodeNotReachableError, NotPermittedError) as error:
            reason = f"catch-up could not send: {error}"
            with self.lock:
                check.unreachable.append(node.instance_id)
        for lack in node.send:
            table.catch_ups.attempted(
                check.cluster, lack.image, node.instance_id, attempts=lack.attempts + 1,
                next_try_at=self.budget.next_try(lack.attempts + 1, self.now), at=self.now,
                event_id=self.event_id, reason=reason,
            )  # fmt: skip

    def count_rounds(self, nodes: list[NodeRow], records: dict[ImageRef, dict[str, CatchUpRecord]]) -> None:
        """One write for the cluster (its round), none per node: the silent nodes are candidates
        to leave coverage (leave_silent_nodes asks EC2)."""
        previous = self.table.nodes.record_round(self.check.cluster, self.event_id, self.now)
        for node in nodes:
            own = [by_node[node.instance_id] for by_node in records.values() if node.instance_id in by_node]
            if missed_rounds(node, own, previous) >= self.settings.leave_after_rounds:
                self.check.left.append(node.instance_id)


def leave_silent_nodes(result: FleetCheckResult, table: AuditTable, describe: Describe, now: datetime) -> None:
    """The silent nodes of every cluster, looked up in ONE DescribeInstances call: those not
    running any more (or gone) leave coverage."""
    candidates = [(check, node) for check in result.clusters for node in check.left]
    for check in result.clusters:
        check.left = []
    if not candidates:
        return
    states = describe(sorted({node for _, node in candidates}))
    for check, node in candidates:
        state = states.get(node, "gone")
        if state in RUNNING:
            continue
        if table.nodes.left(check.cluster, node, now, state):
            check.left.append(node)
            logger.info(
                "a silent node is not running: it leaves coverage",
                extra={"cluster": check.cluster, "instance_id": node, "state": state},
            )


def as_dict(result: FleetCheckResult) -> dict[str, Any]:
    """The result as the handler logs and caches it (idempotency: JSON)."""
    return {
        "rejected": result.rejected,
        "clusters": [
            {
                "cluster": c.cluster, "sent": c.sent, "unreachable": c.unreachable, "given_up": c.given_up,
                "waiting": c.waiting, "left": c.left, "inventory": c.inventory, "coverage": c.coverage,
                "min_coverage": c.min_coverage,
            }
            for c in result.clusters
        ],
    }  # fmt: skip
