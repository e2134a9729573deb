"""The audit table: one DynamoDB table, every question a Query on a key or an index.

Items (pk / sk):
  TAG#<repo>:<tag>          / CURRENT          the digest a tag points to now (catalog)
  CLUSTER#<cluster>         / TAG#<repo>:<tag> the current images of a cluster
  CLUSTER#<cluster>         / NODE#<instance>  a node of a cluster      (gsi1: NODE#<instance> / #NODE,
                                                 gsi2: LIVE#<cluster> / <instance> until it leaves)
  CLUSTERS                  / CLUSTER#<name>   every cluster we send to
  IMAGE#<repo>@<digest>     / #META            the image: tags, pushed, superseded
  IMAGE#<repo>@<digest>     / NODE#<instance>  the image on one node   (gsi1: NODE#<instance> / IMAGE#...,
                                                 gsi2: COVER#<cluster>#<repo>@<digest> while live,
                                                 gsi3: FAIL#<day> / <finished>#... while failed)
  COMMAND#<command-id>      / #META            what a command pulls, for which cluster or node
  idempotency#<function>    / <hash>           Powertools idempotency records

History items carry `expires_at` (TTL); the catalog does not expire.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError, EndpointConnectionError

from prefetcher import clients
from prefetcher.errors import EndpointUnreachableError, TableNotFoundError
from prefetcher.refs import ImageRef
from prefetcher.states import NodeImageUpdate, NodeState
from prefetcher.timestamps import iso, parse_iso

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer

_ser = TypeSerializer()
_de = TypeDeserializer()

GSI_NODE = "gsi1"
BATCH_STATEMENTS = 25  # BatchExecuteStatement's limit
GSI_COVERAGE = "gsi2"
GSI_FAILURES = "gsi3"


def _serialize(value: Any) -> Any:
    # DynamoDB numbers are decimals; a float goes through its shortest repr.
    return _ser.serialize(Decimal(repr(value)) if isinstance(value, float) else value)


def _item(values: dict[str, Any]) -> dict[str, Any]:
    return {key: _serialize(value) for key, value in values.items() if value is not None}


def _plain(item: dict[str, Any]) -> dict[str, Any]:
    return {key: _de.deserialize(value) for key, value in item.items()}


def _values(values: dict[str, Any]) -> dict[str, Any]:
    return {key: _serialize(value) for key, value in values.items()}


class Update:
    """An UpdateItem expression built from attribute names and values. Every name goes through
    a placeholder: DynamoDB reserves hundreds of words (`cluster`, `state`, `bytes`, ...)."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}
        self.values: dict[str, Any] = {}
        self._sets: list[str] = []
        self._adds: list[str] = []
        self._removes: list[str] = []

    def name(self, attribute: str) -> str:
        placeholder = f"#{attribute}"
        self.names[placeholder] = attribute
        return placeholder

    def value(self, value: Any) -> str:
        placeholder = f":v{len(self.values)}"
        self.values[placeholder] = _serialize(value)
        return placeholder

    def set(self, **attributes: Any) -> Update:
        for attribute, value in attributes.items():
            if value is None:
                continue
            self._sets.append(f"{self.name(attribute)} = {self.value(value)}")
        return self

    def set_if_missing(self, **attributes: Any) -> Update:
        for attribute, value in attributes.items():
            name = self.name(attribute)
            self._sets.append(f"{name} = if_not_exists({name}, {self.value(value)})")
        return self

    def copy_to(self, target: str, source: str, default: Any) -> Update:
        """SET target = source's value before this update (or `default`)."""
        self._sets.append(f"{self.name(target)} = if_not_exists({self.name(source)}, {self.value(default)})")
        return self

    def add(self, **attributes: Any) -> Update:
        for attribute, value in attributes.items():
            self._adds.append(f"{self.name(attribute)} {self.value(value)}")
        return self

    def remove(self, *attributes: str) -> Update:
        self._removes += [self.name(attribute) for attribute in attributes]
        return self

    def request(self, key: dict[str, Any], condition: str = "", **extra: Any) -> dict[str, Any]:
        """update_item arguments; `condition` may use {name} for placeholders of attributes and
        values passed as extra `values` (see `condition_newer`)."""
        clauses = []
        if self._sets:
            clauses.append("SET " + ", ".join(self._sets))
        if self._adds:
            clauses.append("ADD " + ", ".join(self._adds))
        if self._removes:
            clauses.append("REMOVE " + ", ".join(self._removes))
        request: dict[str, Any] = {
            "Key": _item(key),
            "UpdateExpression": " ".join(clauses),
            "ExpressionAttributeNames": self.names,
            **({"ExpressionAttributeValues": self.values} if self.values else {}),
            **extra,
        }
        if condition:
            request["ConditionExpression"] = condition
        return request

    def newer_than_stored(self, version: str, allow_equal: bool = False) -> str:
        """A condition: the item is new, or its `version` is older than `version`."""
        operator = "<=" if allow_equal else "<"
        return (
            f"attribute_not_exists({self.name('version')}) OR {self.name('version')} {operator} {self.value(version)}"
        )


def image_pk(repository: str, digest: str) -> str:
    return f"IMAGE#{repository}@{digest}"


def live_pk(cluster: str) -> str:
    return f"LIVE#{cluster}"


def idempotency_records(table_name: str, function: str) -> DynamoDBPersistenceLayer:
    """Where Powertools keeps a function's idempotency records: in the audit table, under
    `idempotency#<function>`, expiring by the table's TTL attribute."""
    from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer

    return DynamoDBPersistenceLayer(
        table_name=table_name,
        key_attr="pk",
        sort_key_attr="sk",
        static_pk_value=f"idempotency#{function}",
        expiry_attr="expires_at",
        boto3_client=clients.client("dynamodb"),
    )


def coverage_pk(cluster: str, repository: str, digest: str) -> str:
    return f"COVER#{cluster}#{repository}@{digest}"


@dataclass(frozen=True)
class PushOutcome:
    current: bool  # False: a newer push of the same tag is already recorded
    previous_digest: str = ""
    newer_digest: str = ""


@dataclass(frozen=True)
class CommandRecord:
    command_id: str
    kind: str  # push | join | resend
    cluster: str
    images: tuple[ImageRef, ...]
    requested_at: datetime
    event_id: str = ""
    instance_id: str = ""
    target: str = ""
    attempt: int = 1  # 1 for a push or a join; n + 1 for images of attempt n sent again


@dataclass
class AuditTable:
    table_name: str
    history_ttl: timedelta = timedelta(days=90)
    _commands: dict[str, CommandRecord] = field(default_factory=dict, repr=False)

    @property
    def _ddb(self) -> Any:
        return clients.client("dynamodb")

    def _expires(self, moment: datetime) -> int:
        return int((moment + self.history_ttl).timestamp())

    def _call(self, operation: str, **kwargs: Any) -> Any:
        try:
            return getattr(self._ddb, operation)(TableName=self.table_name, **kwargs)
        except ClientError as error:
            if error.response["Error"]["Code"] == "ResourceNotFoundException":
                raise TableNotFoundError(f"table {self.table_name} does not exist") from None
            raise
        except EndpointConnectionError as error:
            raise EndpointUnreachableError(str(error)) from None

    # ---- catalog (the push path) ----------------------------------------------------------

    def record_push(
        self,
        image: ImageRef,
        clusters: tuple[str, ...],
        pushed_at: datetime,
        event_id: str,
        media_type: str = "",
    ) -> PushOutcome:
        """Make `image` the current digest of its tag (and of that tag in each cluster), unless a
        newer push of the tag is already recorded. Replays of the same push change nothing."""
        now = iso(datetime.now(UTC))
        pushed = iso(pushed_at)
        # Ties (two pushes of one tag within a second) are broken by digest, so every order of
        # delivery ends with the same current digest.
        version = f"{pushed}#{image.digest}"
        tag_key = f"{image.repository}:{image.tag}"
        update = (
            Update()
            .set(type="tag", repository=image.repository, tag=image.tag, registry=image.registry)
            .copy_to("previous_digest", "digest", "")
            .set(digest=image.digest, version=version, pushed_at=pushed, event_id=event_id, updated_at=now)
        )
        try:
            answer = self._call(
                "update_item",
                **update.request(
                    {"pk": f"TAG#{tag_key}", "sk": "CURRENT"},
                    update.newer_than_stored(version),
                    ReturnValues="ALL_NEW",
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                ),
            )
            previous = _plain(answer["Attributes"]).get("previous_digest", "")
            outcome = PushOutcome(current=True, previous_digest=previous if previous != image.digest else "")
        except ClientError as error:
            if error.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
            stored = _plain(dict(error.response.get("Item", {})))  # type: ignore[call-overload]
            if stored.get("version") == version:
                # The same push again (a retry after a crash): finish what it started.
                previous = stored.get("previous_digest", "")
                outcome = PushOutcome(current=True, previous_digest=previous if previous != image.digest else "")
            else:
                outcome = PushOutcome(current=False, newer_digest=str(stored.get("digest", "")))

        meta = (
            Update()
            .set(type="image", repository=image.repository, digest=image.digest, registry=image.registry)
            .set(media_type=media_type or None, updated_at=now, expires_at=self._expires(pushed_at))
            .set_if_missing(first_pushed_at=pushed)
            .add(tags={image.tag})
        )
        if not outcome.current:
            # Pushed, but a newer push of the tag got there first: recorded as superseded.
            meta.set(superseded_by=outcome.newer_digest, superseded_at=now).add(superseded_tags={image.tag})
        self._call("update_item", **meta.request({"pk": image_pk(image.repository, image.digest), "sk": "#META"}))
        if not outcome.current:
            return outcome

        if outcome.previous_digest:
            older = Update().set(superseded_by=image.digest, superseded_at=now).add(superseded_tags={image.tag})
            try:
                self._call(
                    "update_item",
                    **older.request(
                        {"pk": image_pk(image.repository, outcome.previous_digest), "sk": "#META"},
                        f"attribute_exists({older.name('pk')})",
                    ),
                )
            except ClientError as error:
                if error.response["Error"]["Code"] != "ConditionalCheckFailedException":
                    raise

        for cluster in clusters:
            self._record_cluster_image(cluster, image, version, pushed, now)
        return outcome

    def _record_cluster_image(self, cluster: str, image: ImageRef, version: str, pushed: str, now: str) -> None:
        update = Update().set(
            type="cluster-image",
            cluster=cluster,
            repository=image.repository,
            tag=image.tag,
            registry=image.registry,
            digest=image.digest,
            version=version,
            pushed_at=pushed,
            updated_at=now,
        )
        try:
            self._call(
                "update_item",
                **update.request(
                    {"pk": f"CLUSTER#{cluster}", "sk": f"TAG#{image.repository}:{image.tag}"},
                    update.newer_than_stored(version, allow_equal=True),
                ),
            )
        except ClientError as error:
            if error.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
        self._call(
            "put_item",
            Item=_item({"pk": "CLUSTERS", "sk": f"CLUSTER#{cluster}", "type": "cluster", "cluster": cluster}),
        )

    # ---- commands ---------------------------------------------------------------------------

    def record_command(self, command: CommandRecord) -> None:
        self._call(
            "put_item",
            Item=_item(
                {
                    "pk": f"COMMAND#{command.command_id}",
                    "sk": "#META",
                    "type": "command",
                    "command_id": command.command_id,
                    "kind": command.kind,
                    "cluster": command.cluster,
                    "instance_id": command.instance_id or None,
                    "target": command.target or None,
                    "event_id": command.event_id or None,
                    "requested_at": iso(command.requested_at),
                    "attempt": command.attempt,
                    "images": [
                        {"registry": i.registry, "repository": i.repository, "digest": i.digest, "tag": i.tag}
                        for i in command.images
                    ],
                    "expires_at": self._expires(command.requested_at),
                }
            ),
        )
        self._commands[command.command_id] = command

    def claim_send(self, key: str, now: datetime) -> dict[str, Any] | None:
        """Claim the one send of `key`; returns the earlier claim if there is one."""
        try:
            self._call(
                "put_item",
                Item=_item(
                    {
                        "pk": f"SEND#{key}",
                        "sk": "#META",
                        "type": "send",
                        "claimed_at": iso(now),
                        "expires_at": self._expires(now),
                    }
                ),
                ConditionExpression="attribute_not_exists(pk)",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as error:
            if error.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
            return _plain(dict(error.response.get("Item", {})))  # type: ignore[call-overload]
        return None

    def complete_send(self, key: str, command_id: str, requested_at: datetime) -> None:
        update = Update().set(command_id=command_id, requested_at=iso(requested_at))
        self._call("update_item", **update.request({"pk": f"SEND#{key}", "sk": "#META"}))

    def get_command(self, command_id: str) -> CommandRecord | None:
        """A recorded command (commands never change, so they are cached in memory)."""
        cached = self._commands.get(command_id)
        if cached is not None:
            return cached
        answer = self._call("get_item", Key=_item({"pk": f"COMMAND#{command_id}", "sk": "#META"}))
        if "Item" not in answer:
            return None
        item = _plain(answer["Item"])
        command = CommandRecord(
            command_id=command_id,
            kind=item["kind"],
            cluster=item.get("cluster", ""),
            images=tuple(
                ImageRef(
                    registry=i["registry"],
                    repository=i["repository"],
                    digest=i["digest"],
                    tag=i.get("tag", ""),
                )
                for i in item["images"]
            ),
            requested_at=parse_iso(item["requested_at"]),
            event_id=item.get("event_id", ""),
            instance_id=item.get("instance_id", ""),
            target=item.get("target", ""),
            attempt=int(item.get("attempt", 1)),
        )
        self._commands[command_id] = command
        return command

    # ---- node-image records (the audit path) -------------------------------------------------

    def _node_image_write(self, update: NodeImageUpdate) -> tuple[dict[str, str], dict[str, Any], list[str]]:
        """The key, the attributes to set and the attributes to remove for one update: the one
        definition both write paths (UpdateItem and PartiQL batches) use."""
        image = update.image
        state = update.state
        key = {"pk": image_pk(image.repository, image.digest), "sk": f"NODE#{update.instance_id}"}
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
            "gsi1pk": f"NODE#{update.instance_id}",
            "gsi1sk": image_pk(image.repository, image.digest),
            "gsi2pk": coverage_pk(update.cluster, image.repository, image.digest),
            "gsi2sk": update.instance_id,
            "expires_at": self._expires(update.observed_at),
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
            for name in ("seconds", "bytes"):
                value = getattr(update, name)
                if value is None:
                    removes.append(name)
                else:
                    sets[name] = value
            if not state.is_failure:
                removes += ["gsi3pk", "gsi3sk"]
            else:
                sets["gsi3pk"] = f"FAIL#{finished.astimezone(UTC):%Y-%m-%d}"
                sets["gsi3sk"] = f"{iso(finished)}#{update.instance_id}#{image.repository}@{image.digest}"
        else:
            # A new command (or progress of one): the previous command's outcome no longer
            # describes it; whether the node holds the image (`holds`) stays as it was.
            removes += ["finished_at", "seconds", "bytes", "gsi3pk", "gsi3sk"]
        return key, sets, removes

    def apply(self, update: NodeImageUpdate) -> bool:
        """Write `update` unless the record already holds newer news (a later command, or a
        later state of the same command). Returns False when the update was stale."""
        key, sets, removes = self._node_image_write(update)
        write = Update().set(**sets).remove(*removes)
        try:
            self._call("update_item", **write.request(key, write.newer_than_stored(update.version)))
        except ClientError as error:
            if error.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise
        return True

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
            key, _, _ = self._node_image_write(update)
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

    def _batches(
        self, indexes: list[int], statement: Callable[[int], dict[str, Any]]
    ) -> list[tuple[list[int], list[dict[str, Any]]]]:
        chunks = [indexes[start : start + BATCH_STATEMENTS] for start in range(0, len(indexes), BATCH_STATEMENTS)]
        if len(chunks) <= 1:
            return [(chunk, self._batch([statement(i) for i in chunk])) for chunk in chunks]
        with ThreadPoolExecutor(max_workers=min(len(chunks), 8)) as pool:
            answers = list(pool.map(lambda chunk: self._batch([statement(i) for i in chunk]), chunks))
        return list(zip(chunks, answers, strict=True))

    def _batch(self, statements: list[dict[str, Any]]) -> list[dict[str, Any]]:
        try:
            answer = self._ddb.batch_execute_statement(Statements=statements)
        except ClientError as error:
            if error.response["Error"]["Code"] == "ResourceNotFoundException":
                raise TableNotFoundError(f"table {self.table_name} does not exist") from None
            raise
        responses: list[dict[str, Any]] = answer["Responses"]
        return responses

    def _statement(self, update: NodeImageUpdate, *, insert: bool) -> dict[str, Any]:
        return self._insert_statement(update) if insert else self._update_statement(update)

    def _update_statement(self, update: NodeImageUpdate) -> dict[str, Any]:
        key, sets, removes = self._node_image_write(update)
        clauses = " ".join(f'SET "{name}" = ?' for name in sets) + "".join(f' REMOVE "{name}"' for name in removes)
        return {
            "Statement": f'UPDATE "{self.table_name}" {clauses} WHERE "pk" = ? AND "sk" = ? AND "version" < ?',
            "Parameters": [
                *(_serialize(v) for v in sets.values()),
                _serialize(key["pk"]),
                _serialize(key["sk"]),
                _serialize(update.version),
            ],
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }

    def _insert_statement(self, update: NodeImageUpdate) -> dict[str, Any]:
        key, sets, _ = self._node_image_write(update)
        values = {**key, **sets}
        fields = ", ".join(f"'{name}': ?" for name in values)
        return {
            "Statement": f'INSERT INTO "{self.table_name}" VALUE {{{fields}}}',
            "Parameters": [_serialize(v) for v in values.values()],
        }

    # ---- node lifecycle (the join path) ------------------------------------------------------

    def current_images(self, cluster: str) -> list[ImageRef]:
        """Every current (not superseded) image of a cluster: one Query (of the catalog only; a
        join does not read the cluster's live nodes)."""
        images = self.cluster_images(cluster)
        return sorted(
            ImageRef(registry=i["registry"], repository=i["repository"], digest=i["digest"], tag=i["tag"])
            for i in images
        )

    def node_joined(self, cluster: str, instance_id: str, node_group: str, kind: str, joined_at: datetime) -> bool:
        """A node is running: it joins (or rejoins) its cluster's coverage. False if a newer state
        of the node is already recorded (events arrive out of order)."""
        at = iso(joined_at)
        update = (
            Update()
            .set(type="node", cluster=cluster, instance_id=instance_id, node_group=node_group or None, kind=kind)
            .set(joined_at=at, node_state="joining", gsi1pk=f"NODE#{instance_id}", gsi1sk="#NODE")
            # The live nodes of a cluster: a sparse index entry, removed when the node leaves.
            .set(gsi2pk=live_pk(cluster), gsi2sk=instance_id)
            .set_if_missing(first_seen_at=at)
            .remove("left_at", "warm_at", "warm_seconds", "reason")
        )
        joined, left = update.name("joined_at"), update.name("left_at")
        moment = update.value(at)
        try:
            self._call(
                "update_item",
                **update.request(
                    {"pk": f"CLUSTER#{cluster}", "sk": f"NODE#{instance_id}"},
                    f"(attribute_not_exists({joined}) OR {joined} < {moment}) AND "
                    f"(attribute_not_exists({left}) OR {left} < {moment})",
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                ),
            )
        except ClientError as error:
            if error.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
            stored = _plain(dict(error.response.get("Item", {})))  # type: ignore[call-overload]
            # The same join again (a redelivery): go on; a newer join or a later leave: stale.
            return bool(stored.get("joined_at") == at and not stored.get("left_at", "") > at)
        return True

    def node_left(self, cluster: str, instance_id: str, left_at: datetime, state: str) -> bool:
        """A node stopped or terminated: it leaves coverage (its image records leave the coverage
        index). False if it joined again after `left_at`."""
        at = iso(left_at)
        update = Update().set(
            type="node", cluster=cluster, instance_id=instance_id, left_at=at, node_state="left", left_because=state,
            gsi1pk=f"NODE#{instance_id}", gsi1sk="#NODE",
        ).remove("gsi2pk", "gsi2sk")  # fmt: skip
        joined = update.name("joined_at")
        try:
            self._call(
                "update_item",
                **update.request(
                    {"pk": f"CLUSTER#{cluster}", "sk": f"NODE#{instance_id}"},
                    f"attribute_not_exists({joined}) OR {joined} <= {update.value(at)}",
                ),
            )
        except ClientError as error:
            if error.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise
        _, images = self.node(instance_id)
        for record in images:
            if "gsi2pk" not in record:
                continue
            out = Update().remove("gsi2pk", "gsi2sk")
            try:
                self._call(
                    "update_item",
                    **out.request({"pk": record["pk"], "sk": record["sk"]}, f"attribute_exists({out.name('pk')})"),
                )
            except ClientError as error:
                if error.response["Error"]["Code"] != "ConditionalCheckFailedException":
                    raise
        return True

    def node_cluster(self, instance_id: str) -> str:
        """The cluster a known node belongs to ("" if unknown)."""
        node, _ = self.node(instance_id)
        return str(node["cluster"]) if node else ""

    def node_undeliverable(self, cluster: str, instance_id: str, reason: str, state: str = "undeliverable") -> None:
        """A joining node that could not be warmed: `state` (undeliverable, failed) and why."""
        update = Update().set(node_state=state, reason=reason, updated_at=iso(datetime.now(UTC)))
        self._call("update_item", **update.request({"pk": f"CLUSTER#{cluster}", "sk": f"NODE#{instance_id}"}))

    def node_warm(self, cluster: str, instance_id: str, warm_at: datetime) -> bool:
        """Every image the node was asked for at join is on it: record when (once)."""
        answer = self._call("get_item", Key=_item({"pk": f"CLUSTER#{cluster}", "sk": f"NODE#{instance_id}"}))
        node = _plain(answer.get("Item", {}))
        if not node or node.get("warm_at") or node.get("left_at") or not node.get("joined_at"):
            return False
        seconds = max(0.0, (warm_at - parse_iso(node["joined_at"])).total_seconds())
        update = Update().set(warm_at=iso(warm_at), warm_seconds=round(seconds, 3), node_state="warm")
        try:
            self._call(
                "update_item",
                **update.request(
                    {"pk": f"CLUSTER#{cluster}", "sk": f"NODE#{instance_id}"},
                    f"attribute_not_exists({update.name('warm_at')}) "
                    f"AND attribute_not_exists({update.name('left_at')})",
                ),
            )
        except ClientError as error:
            if error.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise
        return True

    # ---- queries (the CLI) ------------------------------------------------------------------

    def _query(self, **kwargs: Any) -> Iterator[dict[str, Any]]:
        start: dict[str, Any] | None = None
        while True:
            page = self._call("query", **kwargs, **({"ExclusiveStartKey": start} if start else {}))
            for item in page.get("Items", []):
                yield _plain(item)
            start = page.get("LastEvaluatedKey")
            if not start:
                return

    def current_tag(self, repository: str, tag: str) -> dict[str, Any] | None:
        answer = self._call("get_item", Key=_item({"pk": f"TAG#{repository}:{tag}", "sk": "CURRENT"}))
        return _plain(answer["Item"]) if "Item" in answer else None

    def image(self, repository: str, digest: str) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        """The image's own item and every node's record of it (one Query)."""
        meta: dict[str, Any] | None = None
        nodes = []
        for item in self._query(
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues=_values({":pk": image_pk(repository, digest)}),
        ):
            if item["sk"] == "#META":
                meta = item
            else:
                nodes.append(item)
        return meta, nodes

    def node(self, instance_id: str) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        """A node's item and its records of every image (one Query on gsi1)."""
        node: dict[str, Any] | None = None
        images = []
        for item in self._query(
            IndexName=GSI_NODE,
            KeyConditionExpression="gsi1pk = :pk",
            ExpressionAttributeValues=_values({":pk": f"NODE#{instance_id}"}),
        ):
            if item["gsi1sk"] == "#NODE":
                node = item
            else:
                images.append(item)
        return node, images

    def clusters(self) -> list[str]:
        return [
            item["cluster"]
            for item in self._query(
                KeyConditionExpression="pk = :pk", ExpressionAttributeValues=_values({":pk": "CLUSTERS"})
            )
        ]

    def cluster(self, cluster: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """A cluster's current images (one Query) and its live nodes (one Query on gsi2: nodes
        that left are not in it, so they are not read)."""
        return self.cluster_images(cluster), self.live_nodes(cluster)

    def cluster_images(self, cluster: str) -> list[dict[str, Any]]:
        """A cluster's current images: one Query."""
        return list(
            self._query(
                KeyConditionExpression="pk = :pk AND begins_with(sk, :tag)",
                ExpressionAttributeValues=_values({":pk": f"CLUSTER#{cluster}", ":tag": "TAG#"}),
            )
        )

    def live_nodes(self, cluster: str) -> list[dict[str, Any]]:
        """A cluster's live nodes: one Query on gsi2 (nodes that left are not in it)."""
        return list(
            self._query(
                IndexName=GSI_COVERAGE,
                KeyConditionExpression="gsi2pk = :pk",
                ExpressionAttributeValues=_values({":pk": live_pk(cluster)}),
            )
        )

    def coverage(self, cluster: str, repository: str, digest: str) -> list[dict[str, Any]]:
        """Every live node's record of one image in one cluster (one Query on gsi2)."""
        return list(
            self._query(
                IndexName=GSI_COVERAGE,
                KeyConditionExpression="gsi2pk = :pk",
                ExpressionAttributeValues=_values({":pk": coverage_pk(cluster, repository, digest)}),
            )
        )

    def failures(self, since: datetime, until: datetime | None = None) -> list[dict[str, Any]]:
        """Current failures that ended after `since`, newest first (one Query per day)."""
        until = until or datetime.now(UTC)
        found: list[dict[str, Any]] = []
        day = until.astimezone(UTC).date()
        while day >= since.astimezone(UTC).date():
            found += self._query(
                IndexName=GSI_FAILURES,
                KeyConditionExpression="gsi3pk = :pk AND gsi3sk >= :since",
                ExpressionAttributeValues=_values({":pk": f"FAIL#{day:%Y-%m-%d}", ":since": iso(since)}),
                ScanIndexForward=False,
            )
            day -= timedelta(days=1)
        return found
