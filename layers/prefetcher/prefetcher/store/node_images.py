"""Node-image records (the audit path writes them; a join records what it could not send): one
item per image per node, its state as last reported. A record only ever moves to newer news:
every write is conditional on the stored `version` (states.NodeImageUpdate.version)."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from prefetcher.inventory import Reconcile, Verification
from prefetcher.states import NodeImageUpdate, NodeState
from prefetcher.store import keys
from prefetcher.store.client import TableClient
from prefetcher.store.expressions import Update, serialize
from prefetcher.store.verifications import Verifier
from prefetcher.timestamps import iso

BATCH_STATEMENTS = 25  # BatchExecuteStatement's limit


@dataclass(frozen=True)
class RecordWrite:
    """The key, the attributes to set and the attributes to remove for one update: the one
    definition both write paths (UpdateItem and PartiQL batches) use."""

    key: keys.Key
    sets: dict[str, Any]
    removes: list[str]


def record_write(update: NodeImageUpdate, expires_at: int) -> RecordWrite:
    image = update.image
    state = update.state
    sets: dict[str, Any] = {
        "type": "node-image",
        "instance_id": update.instance_id,
        "cluster": update.cluster,
        "repository": image.repository,
        "digest": image.digest,
        "tag": image.tag,
        "registry": image.registry,
        "state": str(state),
        "version": update.version,
        "command_id": update.command_id,
        "requested_at": iso(update.requested_at),
        "observed_at": iso(update.observed_at),
        "updated_at": iso(datetime.now(UTC)),
        "gsi1pk": keys.node_pk(update.instance_id),
        "gsi1sk": keys.image_pk(image.repository, image.digest),
        "gsi2pk": keys.coverage_pk(update.cluster, image.repository, image.digest),
        "gsi2sk": update.instance_id,
        keys.TTL_ATTRIBUTE: expires_at,
    }
    removes: list[str] = []
    if update.reason:
        sets["reason"] = update.reason
    else:
        removes.append("reason")
    if update.started_at:
        sets["started_at"] = iso(update.started_at)
    if state.terminal:
        finished = update.finished_at or update.observed_at
        sets["finished_at"] = iso(finished)
        if state is not NodeState.UNKNOWN:  # unknown: whether the node holds it stays as it was
            sets["holds"] = state.holds_image
        if state.holds_image:
            sets["last_seen_at"] = iso(finished)  # kept when an inventory finds it evicted
        for name in ("seconds", "bytes"):
            value = getattr(update, name)
            if value is None:
                removes.append(name)
            else:
                sets[name] = value
        if not state.is_failure:
            removes += ["gsi3pk", "gsi3sk"]
        else:
            sets["gsi3pk"] = keys.failure_pk(finished.astimezone(UTC).date())
            sets["gsi3sk"] = keys.failure_sk(finished, update.instance_id, image.repository, image.digest)
    else:
        # A new command (or progress of one): the previous command's outcome no longer
        # describes it; whether the node holds the image (`holds`) stays as it was.
        removes += ["finished_at", "seconds", "bytes", "gsi3pk", "gsi3sk"]
    return RecordWrite(keys.node_image(image.repository, image.digest, update.instance_id), sets, removes)


def update_statement(table_name: str, write: RecordWrite, version: str) -> dict[str, Any]:
    """PartiQL UPDATE of an existing record, if what it holds is older than `version`."""
    clauses = " ".join(f'SET "{name}" = ?' for name in write.sets) + "".join(
        f' REMOVE "{name}"' for name in write.removes
    )
    return {
        "Statement": f'UPDATE "{table_name}" {clauses} WHERE "pk" = ? AND "sk" = ? AND "version" < ?',
        "Parameters": [
            *(serialize(v) for v in write.sets.values()),
            serialize(write.key["pk"]),
            serialize(write.key["sk"]),
            serialize(version),
        ],
        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
    }


def insert_statement(table_name: str, write: RecordWrite) -> dict[str, Any]:
    """PartiQL INSERT of a record that is not there yet."""
    values = {**write.key, **write.sets}
    fields = ", ".join(f"'{name}': ?" for name in values)
    return {
        "Statement": f'INSERT INTO "{table_name}" VALUE {{{fields}}}',
        "Parameters": [serialize(v) for v in values.values()],
    }


class NodeImages:
    def __init__(self, client: TableClient) -> None:
        self._client = client
        self._verifier = Verifier(client, self._batches)

    def verify_many(self, found: list[Verification]) -> list[Reconcile]:
        """An inventory's results (store/verifications.py): per verification, what it did to the
        record (`Reconcile.STALE` or `NOTHING`: nothing written), in PartiQL batches."""
        return self._verifier.apply_many(found) if found else []

    def _write(self, update: NodeImageUpdate) -> RecordWrite:
        return record_write(update, self._client.expires(update.observed_at))

    def apply(self, update: NodeImageUpdate) -> bool:
        """Write `update` unless the record already holds newer news (a later command, or a
        later state of the same command). Returns False when the update was stale."""
        write = self._write(update)
        request = Update().set(**write.sets).remove(*write.removes)
        return self._client.update_if(write.key, request, request.newer_than_stored(update.version)).done

    def apply_many(self, updates: list[NodeImageUpdate]) -> list[bool]:
        """`apply` for many updates, 25 conditional writes a request (PartiQL batches: each
        statement keeps its own condition and its own result). Returns, per update, whether it
        was written (False: stale).

        PartiQL has no upsert: `UPDATE` needs the record to exist, `INSERT` needs it not to. An
        invocation's first news (requested, in progress) usually finds no record, its end finds
        the one its first news made; so the first is tried as an `INSERT`, the end as an `UPDATE`,
        and a statement that meets the other case is sent again as the other kind. Whatever a
        batch statement could not decide is done by `apply`."""
        if len(updates) <= 1:
            return [self.apply(u) for u in updates]
        written: list[bool | None] = [None] * len(updates)
        # One statement per record: of two updates of one record, only the newer can win.
        newest: dict[tuple[str, str], int] = {}
        for index, update in enumerate(updates):
            key = self._write(update).key
            k = (key["pk"], key["sk"])
            if k in newest and updates[newest[k]].version >= update.version:
                written[index] = False
                continue
            if k in newest:
                written[newest[k]] = False
            newest[k] = index
        todo = {index: updates[index].state.rank < 2 for index in sorted(newest.values())}  # index -> insert?
        retry: list[int] = []
        for last_try in (False, True):
            again: dict[int, bool] = {}
            # The batches of a call go out together: each is a round trip, and they do not overlap.
            statements = {i: self._statement(updates[i], insert=insert) for i, insert in todo.items()}
            for chunk, answer in self._batches(list(todo), statements.__getitem__):
                for index, response in zip(chunk, answer, strict=True):
                    error = response.get("Error")
                    if not error:
                        written[index] = True
                    elif todo[index] and error.get("Code") == "DuplicateItem":
                        again[index] = False  # the record exists: update it
                    elif not todo[index] and error.get("Code") == "ConditionalCheckFailed":
                        stored = error.get("Item")
                        if not stored:
                            again[index] = True  # no record yet: insert it
                        elif stored.get("version", {}).get("S", "") >= updates[index].version:
                            written[index] = False  # newer news is stored
                        else:
                            retry.append(index)  # a record without a version: `apply` admits it
                    else:
                        retry.append(index)
            if last_try:
                retry += again  # a racing write changed the record between the two statements
            todo = again
        for index in retry:
            written[index] = self.apply(updates[index])
        return [bool(w) for w in written]

    def _statement(self, update: NodeImageUpdate, *, insert: bool) -> dict[str, Any]:
        write = self._write(update)
        table = self._client.table_name
        return insert_statement(table, write) if insert else update_statement(table, write, update.version)

    def _batches(
        self, indexes: list[int], statement: Callable[[int], dict[str, Any]]
    ) -> list[tuple[list[int], list[dict[str, Any]]]]:
        chunks = [indexes[start : start + BATCH_STATEMENTS] for start in range(0, len(indexes), BATCH_STATEMENTS)]
        if len(chunks) <= 1:
            return [(chunk, self._client.execute_batch([statement(i) for i in chunk])) for chunk in chunks]
        with ThreadPoolExecutor(max_workers=min(len(chunks), 8)) as pool:
            answers = list(pool.map(lambda chunk: self._client.execute_batch([statement(i) for i in chunk]), chunks))
        return list(zip(chunks, answers, strict=True))
