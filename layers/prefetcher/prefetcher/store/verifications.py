"""An inventory's results written to the node-image records (`table.node_images.verify_many`):
what each line does depends on the record as stored (inventory.reconcile), and DynamoDB decides
it in the same PartiQL batches as the pulls' writes, under the same ordering (`version`).

- found present, recorded held (cached, present): `verified_at`, `last_seen_at`, the expiry
  (`expires_at`) and the version move on; the pull's own fields stay;
- found present, recorded as not holding it, or not recorded: the record becomes `present`;
- found absent, recorded held: `evicted` (`last_seen_at` stays: when it was last known there);
- found absent, not recorded as held: nothing (the catch-up's business).

Every statement carries `version < :inventory's version` (or the exact version it read), so an
inventory never overwrites a newer pull's news and a replayed one writes nothing. The first
statement guesses the common case (the record holds the image); a failed condition returns the
record as stored (ALL_OLD), and the second statement is the one `reconcile` decides from it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefetcher.errors import TransientError
from prefetcher.inventory import Reconcile, Verification, reconcile
from prefetcher.states import NodeState
from prefetcher.store import keys
from prefetcher.store.client import TableClient
from prefetcher.store.expressions import plain, serialize
from prefetcher.timestamps import iso

ROUNDS = 3  # guess, decided, and once more after a racing write
_HELD = (str(NodeState.CACHED), str(NodeState.PRESENT))


def _key(found: Verification) -> keys.Key:
    return keys.node_image(found.image.repository, found.image.digest, found.instance_id)


def _common(found: Verification, expires_at: int) -> dict[str, Any]:
    return {
        "verified_at": iso(found.verified_at),
        "verified_by": found.command_id,
        "version": found.version,
        "pinned": found.pinned,
        "updated_at": iso(datetime.now(UTC)),
        keys.TTL_ATTRIBUTE: expires_at,
    }


def _present(found: Verification, expires_at: int) -> dict[str, Any]:
    """Every attribute of a record that an inventory found present (it pulled nothing)."""
    image = found.image
    return {
        "type": "node-image",
        "instance_id": found.instance_id,
        "cluster": found.cluster,
        "repository": image.repository,
        "digest": image.digest,
        "tag": image.tag,
        "registry": image.registry,
        "state": str(NodeState.PRESENT),
        "holds": True,
        "command_id": found.command_id,
        "requested_at": iso(found.requested_at),
        "observed_at": iso(found.verified_at),
        "finished_at": iso(found.verified_at),
        "last_seen_at": iso(found.verified_at),
        **({"bytes": found.bytes} if found.bytes else {}),
        "gsi1pk": keys.node_pk(found.instance_id),
        "gsi1sk": keys.image_pk(image.repository, image.digest),
        "gsi2pk": keys.coverage_pk(found.cluster, image.repository, image.digest),
        "gsi2sk": found.instance_id,
        **_common(found, expires_at),
    }


def _update(
    table: str, key: keys.Key, sets: dict[str, Any], removes: list[str], *, where: str, values: list[Any]
) -> Any:
    clauses = " ".join(f'SET "{name}" = ?' for name in sets) + "".join(f' REMOVE "{name}"' for name in removes)
    return {
        "Statement": f'UPDATE "{table}" {clauses} WHERE "pk" = ? AND "sk" = ? AND {where}',
        "Parameters": [serialize(v) for v in [*sets.values(), key["pk"], key["sk"], *values]],
        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
    }


def statement(table: str, found: Verification, plan: Reconcile, stored: dict[str, Any] | None, expires_at: int) -> Any:
    """The PartiQL statement of `plan` for `found` (`stored`: the record as read, if it was)."""
    key = _key(found)
    held = '"version" < ? AND ("state" = ? OR "state" = ?)'
    if plan is Reconcile.REFRESH:
        sets = {**_common(found, expires_at), "last_seen_at": iso(found.verified_at)}
        return _update(table, key, sets, [], where=held, values=[found.version, *_HELD])
    if plan is Reconcile.EVICT:
        sets = {
            **_common(found, expires_at),
            "state": str(NodeState.EVICTED),
            "holds": False,
            "reason": f"not on the node at {iso(found.verified_at)} (inventory {found.command_id}): removed since it "
            "was last seen (the kubelet's image garbage collection, or by hand)",
        }
        if stored is None:  # the guess: a record that knows when it was last seen keeps it
            return _update(table, key, sets, [], where=f'{held} AND "last_seen_at" IS NOT MISSING',
                           values=[found.version, *_HELD])  # fmt: skip
        # A record written before `last_seen_at` existed: when it was last known there, as read.
        seen = stored.get("last_seen_at") or stored.get("verified_at") or stored.get("finished_at")
        sets = {**sets, **({"last_seen_at": str(seen)} if seen else {})}
        return _update(table, key, sets, [], where='"version" = ?', values=[str(stored.get("version", ""))])
    values = _present(found, expires_at)
    if stored is None:
        fields = ", ".join(f"'{name}': ?" for name in {**key, **values})
        return {
            "Statement": f'INSERT INTO "{table}" VALUE {{{fields}}}',
            "Parameters": [serialize(v) for v in {**key, **values}.values()],
        }
    removes = ["reason", "seconds", "started_at", "gsi3pk", "gsi3sk"]
    return _update(table, key, values, removes, where='"version" = ?', values=[str(stored.get("version", ""))])


class Verifier:
    """Writes an inventory's verifications in PartiQL batches (node_images.batches)."""

    def __init__(self, client: TableClient, batches: Any) -> None:
        self._client = client
        self._batches = batches

    def apply_many(self, found: list[Verification]) -> list[Reconcile]:
        """Per verification, what it did (STALE or NOTHING: nothing was written)."""
        done = [Reconcile.STALE] * len(found)
        newest: dict[tuple[str, str], int] = {}  # one statement per record: the newest inventory's
        for index, item in enumerate(found):
            key = _key(item)
            k = (key["pk"], key["sk"])
            if k not in newest or found[newest[k]].version < item.version:
                newest[k] = index
        todo: dict[int, tuple[Reconcile, dict[str, Any] | None]] = {
            i: (Reconcile.REFRESH if found[i].present else Reconcile.EVICT, None) for i in sorted(newest.values())
        }
        for _ in range(ROUNDS):
            if not todo:
                break
            plans = dict(todo)
            todo = {}

            def make(i: int, plans: dict[int, tuple[Reconcile, dict[str, Any] | None]] = plans) -> Any:
                item = found[i]
                return statement(self._client.table_name, item, *plans[i], self._client.expires(item.verified_at))

            for chunk, answer in self._batches(list(plans), make):
                for index, response in zip(chunk, answer, strict=True):
                    error = response.get("Error")
                    if not error:
                        done[index] = plans[index][0]
                        continue
                    if error.get("Code") == "DuplicateItem":  # inserted meanwhile: read it by a guess
                        todo[index] = (Reconcile.REFRESH if found[index].present else Reconcile.EVICT, None)
                        continue
                    if error.get("Code") != "ConditionalCheckFailed":
                        raise TransientError(f"inventory write failed: {error.get('Code')}: {error.get('Message')}")
                    stored = plain(error["Item"]) if error.get("Item") else None
                    state = str(stored["state"]) if stored else None
                    decided = reconcile(state, str(stored["version"]) if stored and "version" in stored else None,
                                        found[index])  # fmt: skip
                    if decided in (Reconcile.NOTHING, Reconcile.STALE):
                        done[index] = decided
                    else:
                        todo[index] = (decided, stored)
        if todo:
            raise TransientError(f"{len(todo)} inventory write(s) kept meeting racing writes; the event is retried")
        return done
