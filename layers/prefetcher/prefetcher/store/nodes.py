"""Node lifecycle (the join path, and the audit path's warm mark): a node joins its cluster's
coverage, is warmed or recorded undeliverable, and leaves. Events arrive out of order; every
transition is a conditional write on the node's own times."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefetcher.errors import TransientError
from prefetcher.store import keys
from prefetcher.store.client import TableClient
from prefetcher.store.expressions import Update
from prefetcher.timestamps import iso, parse_iso

ROUNDS_KEPT = 16  # more than LeaveCoverageAfterRounds may be (template.yaml)


class Nodes:
    def __init__(self, client: TableClient) -> None:
        self._client = client

    def joined(self, cluster: str, instance_id: str, node_group: str, kind: str, joined_at: datetime) -> bool:
        """A node is running: it joins (or rejoins) its cluster's coverage. False if a newer state
        of the node is already recorded (events arrive out of order)."""
        at = iso(joined_at)
        update = (
            Update()
            .set(type="node", cluster=cluster, instance_id=instance_id, node_group=node_group or None, kind=kind)
            .set(joined_at=at, node_state="joining", gsi1pk=keys.node_pk(instance_id), gsi1sk=keys.NODE_ITEM)
            # The live nodes of a cluster: a sparse index entry, removed when the node leaves.
            .set(gsi2pk=keys.live_pk(cluster), gsi2sk=instance_id)
            .set_if_missing(first_seen_at=at)
            .remove("left_at", "warm_at", "warm_seconds", "reason")
        )
        joined, left = update.name("joined_at"), update.name("left_at")
        moment = update.value(at)
        written = self._client.update_if(
            keys.node(cluster, instance_id),
            update,
            f"(attribute_not_exists({joined}) OR {joined} < {moment}) AND "
            f"(attribute_not_exists({left}) OR {left} < {moment})",
            stored_on_failure=True,
        )
        if written.done:
            return True
        stored = written.item
        # The same join again (a redelivery): go on; a newer join or a later leave: stale.
        return bool(stored.get("joined_at") == at and not stored.get("left_at", "") > at)

    def left(self, cluster: str, instance_id: str, left_at: datetime, state: str) -> bool:
        """A node stopped or terminated: it leaves coverage (its image records leave the coverage
        index). False if it joined again after `left_at`."""
        at = iso(left_at)
        update = Update().set(
            type="node", cluster=cluster, instance_id=instance_id, left_at=at, node_state="left", left_because=state,
            gsi1pk=keys.node_pk(instance_id), gsi1sk=keys.NODE_ITEM,
        ).remove("gsi2pk", "gsi2sk")  # fmt: skip
        joined = update.name("joined_at")
        condition = f"attribute_not_exists({joined}) OR {joined} <= {update.value(at)}"
        if not self._client.update_if(keys.node(cluster, instance_id), update, condition).done:
            return False
        for record in self._items(instance_id):
            if record["gsi1sk"] == keys.NODE_ITEM or "gsi2pk" not in record:
                continue
            out = Update().remove("gsi2pk", "gsi2sk")
            self._client.update_if(keys.key(record["pk"], record["sk"]), out, out.exists())
        return True

    def record_round(self, cluster: str, event_id: str, at: datetime) -> list[str]:
        """A fleet check's inventory round of `cluster`, kept on one item per cluster (its last
        ROUNDS_KEPT rounds; once per event: a replay adds nothing). Returns the times of the rounds
        before this one, oldest first: a node that has answered none of them since its last
        verification has missed them all (fleet_check.missed_rounds), with no write per node."""
        for _ in range(3):  # two checks of one cluster at once: the one that lost reads again
            stored = self._client.get(keys.cluster_rounds(cluster)) or {}
            rounds = {str(r["event"]): str(r["at"]) for r in stored.get("rounds", [])}
            this = rounds.get(event_id, iso(at))
            previous = sorted(t for event, t in rounds.items() if event != event_id and t < this)
            if event_id in rounds:
                return previous  # a replayed event: its round is counted already
            kept = sorted([*rounds.items(), (event_id, this)], key=lambda round_: round_[1])[-ROUNDS_KEPT:]
            update = Update().set(rounds=[{"event": event, "at": t} for event, t in kept]).add(version=1)
            version = update.name("version")
            condition = (
                f"attribute_not_exists({version})"
                if "version" not in stored
                else f"{version} = {update.value(stored['version'])}"
            )
            if self._client.update_if(keys.cluster_rounds(cluster), update, condition).done:
                return previous
        raise TransientError(f"the fleet-check rounds of {cluster} changed under this check three times")

    def cluster_of(self, instance_id: str) -> str:
        """The cluster a known node belongs to ("" if unknown)."""
        for item in self._items(instance_id):
            if item["gsi1sk"] == keys.NODE_ITEM:
                return str(item["cluster"])
        return ""

    def _items(self, instance_id: str) -> list[dict[str, Any]]:
        """A node's item and its image records, as stored (one Query on gsi1)."""
        return list(self._client.query("gsi1pk = :pk", {":pk": keys.node_pk(instance_id)}, index=keys.GSI_NODE))

    def undeliverable(self, cluster: str, instance_id: str, reason: str, state: str = "undeliverable") -> None:
        """A joining node that could not be warmed: `state` (undeliverable, failed) and why."""
        update = Update().set(node_state=state, reason=reason, updated_at=iso(datetime.now(UTC)))
        self._client.update(keys.node(cluster, instance_id), update)

    def warm(self, cluster: str, instance_id: str, warm_at: datetime) -> bool:
        """Every image the node was asked for at join is on it: record when (once)."""
        node = self._client.get(keys.node(cluster, instance_id)) or {}
        if not node or node.get("warm_at") or node.get("left_at") or not node.get("joined_at"):
            return False
        seconds = max(0.0, (warm_at - parse_iso(node["joined_at"])).total_seconds())
        update = Update().set(warm_at=iso(warm_at), warm_seconds=round(seconds, 3), node_state="warm")
        condition = f"attribute_not_exists({update.name('warm_at')}) AND attribute_not_exists({update.name('left_at')})"
        return self._client.update_if(keys.node(cluster, instance_id), update, condition).done
