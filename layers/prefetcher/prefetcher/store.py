"""The audit table: one DynamoDB table, every question a Query on a key or an index.

Items (pk / sk):
  TAG#<repo>:<tag>          / CURRENT          the digest a tag points to now (catalog)
  CLUSTER#<cluster>         / TAG#<repo>:<tag> the current images of a cluster
  CLUSTER#<cluster>         / NODE#<instance>  a node of a cluster      (gsi1: NODE#<instance> / #NODE)
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

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError, EndpointConnectionError

from prefetcher import clients
from prefetcher.errors import EndpointUnreachableError, TableNotFoundError
from prefetcher.refs import ImageRef
from prefetcher.states import NodeImageUpdate, NodeState

_ser = TypeSerializer()
_de = TypeDeserializer()

GSI_NODE = "gsi1"
GSI_COVERAGE = "gsi2"
GSI_FAILURES = "gsi3"


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"


def parse_iso(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _item(values: dict[str, Any]) -> dict[str, Any]:
    return {key: _ser.serialize(value) for key, value in values.items() if value is not None}


def _plain(item: dict[str, Any]) -> dict[str, Any]:
    return {key: _de.deserialize(value) for key, value in item.items()}


def _values(values: dict[str, Any]) -> dict[str, Any]:
    return {key: _ser.serialize(value) for key, value in values.items()}


def image_pk(repository: str, digest: str) -> str:
    return f"IMAGE#{repository}@{digest}"


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
    kind: str  # push | join
    cluster: str
    images: tuple[ImageRef, ...]
    requested_at: datetime
    event_id: str = ""
    instance_id: str = ""
    target: str = ""


@dataclass
class AuditTable:
    table_name: str
    history_ttl: timedelta = timedelta(days=90)
    _known_nodes: set[tuple[str, str]] = field(default_factory=set, repr=False)
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
        self, image: ImageRef, clusters: tuple[str, ...], pushed_at: datetime, event_id: str, media_type: str = ""
    ) -> PushOutcome:
        """Make `image` the current digest of its tag (and of that tag in each cluster), unless a
        newer push of the tag is already recorded. Replays of the same push change nothing."""
        now = iso(datetime.now(UTC))
        pushed = iso(pushed_at)
        # Ties (two pushes of one tag within a second) are broken by digest, so every order of
        # delivery ends with the same current digest.
        version = f"{pushed}#{image.digest}"
        tag_key = f"{image.repository}:{image.tag}"
        outcome = PushOutcome(current=True)
        try:
            answer = self._call(
                "update_item",
                Key=_item({"pk": f"TAG#{tag_key}", "sk": "CURRENT"}),
                UpdateExpression=(
                    "SET #type = :type, repository = :repo, tag = :tag, registry = :reg, "
                    "previous_digest = if_not_exists(digest, :none), digest = :digest, "
                    "version = :v, pushed_at = :pushed, event_id = :event, updated_at = :now"
                ),
                ConditionExpression="attribute_not_exists(version) OR version < :v",
                ExpressionAttributeNames={"#type": "type"},
                ExpressionAttributeValues=_values(
                    {
                        ":type": "tag",
                        ":repo": image.repository,
                        ":tag": image.tag,
                        ":reg": image.registry,
                        ":none": "",
                        ":digest": image.digest,
                        ":v": version,
                        ":pushed": pushed,
                        ":event": event_id,
                        ":now": now,
                    }
                ),
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
            previous = _plain(answer["Attributes"]).get("previous_digest", "")
            outcome = PushOutcome(current=True, previous_digest=previous if previous != image.digest else "")
        except ClientError as error:
            if error.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
            stored = _plain(error.response.get("Item", {}))
            if stored.get("version") == version:
                # The same push again (a retry after a crash): finish what it started.
                previous = stored.get("previous_digest", "")
                outcome = PushOutcome(current=True, previous_digest=previous if previous != image.digest else "")
            else:
                outcome = PushOutcome(current=False, newer_digest=str(stored.get("digest", "")))

        meta_sets = (
            "#type = :type, repository = :repo, digest = :digest, registry = :reg, "
            "first_pushed_at = if_not_exists(first_pushed_at, :pushed), media_type = :media, "
            "updated_at = :now, expires_at = :exp"
        )
        meta_adds = "tags :tags"
        meta_values: dict[str, Any] = {
            ":type": "image",
            ":repo": image.repository,
            ":digest": image.digest,
            ":reg": image.registry,
            ":pushed": pushed,
            ":media": media_type,
            ":now": now,
            ":exp": self._expires(pushed_at),
            ":tags": {image.tag},
        }
        if not outcome.current:
            # Pushed, but a newer push of the tag got there first: recorded as superseded.
            meta_sets += ", superseded_by = :newer, superseded_at = :now"
            meta_adds += ", superseded_tags :tags"
            meta_values[":newer"] = outcome.newer_digest
        self._call(
            "update_item",
            Key=_item({"pk": image_pk(image.repository, image.digest), "sk": "#META"}),
            UpdateExpression=f"SET {meta_sets} ADD {meta_adds}",
            ExpressionAttributeNames={"#type": "type"},
            ExpressionAttributeValues=_values(meta_values),
        )
        if not outcome.current:
            return outcome

        if outcome.previous_digest:
            try:
                self._call(
                    "update_item",
                    Key=_item({"pk": image_pk(image.repository, outcome.previous_digest), "sk": "#META"}),
                    UpdateExpression="SET superseded_by = :d, superseded_at = :now ADD superseded_tags :tags",
                    ConditionExpression="attribute_exists(pk)",
                    ExpressionAttributeValues=_values(
                        {":d": image.digest, ":now": now, ":tags": {image.tag}}
                    ),
                )
            except ClientError as error:
                if error.response["Error"]["Code"] != "ConditionalCheckFailedException":
                    raise

        for cluster in clusters:
            self._record_cluster_image(cluster, image, version, pushed, now)
        return outcome

    def _record_cluster_image(self, cluster: str, image: ImageRef, version: str, pushed: str, now: str) -> None:
        try:
            self._call(
                "update_item",
                Key=_item({"pk": f"CLUSTER#{cluster}", "sk": f"TAG#{image.repository}:{image.tag}"}),
                UpdateExpression=(
                    "SET #type = :type, cluster = :cluster, repository = :repo, tag = :tag, "
                    "registry = :reg, digest = :digest, version = :v, pushed_at = :pushed, updated_at = :now"
                ),
                ConditionExpression="attribute_not_exists(version) OR version <= :v",
                ExpressionAttributeNames={"#type": "type"},
                ExpressionAttributeValues=_values(
                    {
                        ":type": "cluster-image",
                        ":cluster": cluster,
                        ":repo": image.repository,
                        ":tag": image.tag,
                        ":reg": image.registry,
                        ":digest": image.digest,
                        ":v": version,
                        ":pushed": pushed,
                        ":now": now,
                    }
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
                    "images": [
                        {"registry": i.registry, "repository": i.repository, "digest": i.digest, "tag": i.tag}
                        for i in command.images
                    ],
                    "expires_at": self._expires(command.requested_at),
                }
            ),
        )
        self._commands[command.command_id] = command

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
                ImageRef(registry=i["registry"], repository=i["repository"], digest=i["digest"], tag=i.get("tag", ""))
                for i in item["images"]
            ),
            requested_at=parse_iso(item["requested_at"]),
            event_id=item.get("event_id", ""),
            instance_id=item.get("instance_id", ""),
            target=item.get("target", ""),
        )
        self._commands[command_id] = command
        return command

    # ---- node-image records (the audit path) -------------------------------------------------

    def apply(self, update: NodeImageUpdate) -> bool:
        """Write `update` unless the record already holds newer news (a later command, or a
        later state of the same command). Returns False when the update was stale."""
        image = update.image
        state = update.state
        names = {"#type": "type", "#state": "state"}
        values: dict[str, Any] = {
            ":type": "node-image",
            ":instance": update.instance_id,
            ":cluster": update.cluster,
            ":repo": image.repository,
            ":digest": image.digest,
            ":tag": image.tag,
            ":reg": image.registry,
            ":state": str(state),
            ":v": update.version,
            ":cmd": update.command_id,
            ":req": iso(update.requested_at),
            ":obs": iso(update.observed_at),
            ":now": iso(datetime.now(UTC)),
            ":g1p": f"NODE#{update.instance_id}",
            ":g1s": image_pk(image.repository, image.digest),
            ":g2p": coverage_pk(update.cluster, image.repository, image.digest),
            ":exp": self._expires(update.observed_at),
        }
        sets = [
            "#type = :type", "instance_id = :instance", "cluster = :cluster", "repository = :repo",
            "digest = :digest", "tag = :tag", "registry = :reg", "#state = :state", "version = :v",
            "command_id = :cmd", "requested_at = :req", "observed_at = :obs", "updated_at = :now",
            "gsi1pk = :g1p", "gsi1sk = :g1s", "gsi2pk = :g2p", "gsi2sk = :instance", "expires_at = :exp",
        ]  # fmt: skip
        removes = []
        if update.reason:
            sets.append("reason = :reason")
            values[":reason"] = update.reason
        else:
            removes.append("reason")
        if update.started_at is not None:
            sets.append("started_at = :started")
            values[":started"] = iso(update.started_at)
        if state.terminal:
            finished = update.finished_at or update.observed_at
            sets += ["finished_at = :fin", "holds = :holds"]
            values[":fin"] = iso(finished)
            values[":holds"] = state.holds_image
            for name, value in (("seconds", update.seconds), ("bytes", update.bytes)):
                if value is None:
                    removes.append(name)
                else:
                    sets.append(f"{name} = :{name}")
                    values[f":{name}"] = value
            if state.holds_image:
                sets.append("cached_at = if_not_exists(cached_at, :fin)")
                removes += ["gsi3pk", "gsi3sk"]
            else:
                sets += ["gsi3pk = :g3p", "gsi3sk = :g3s"]
                values[":g3p"] = f"FAIL#{finished.astimezone(UTC):%Y-%m-%d}"
                values[":g3s"] = f"{iso(finished)}#{update.instance_id}#{image.repository}@{image.digest}"
        else:
            removes += ["finished_at", "seconds", "bytes", "gsi3pk", "gsi3sk"]
        expression = "SET " + ", ".join(sets)
        if removes:
            expression += " REMOVE " + ", ".join(removes)
        try:
            self._call(
                "update_item",
                Key=_item({"pk": image_pk(image.repository, image.digest), "sk": f"NODE#{update.instance_id}"}),
                UpdateExpression=expression,
                ConditionExpression="attribute_not_exists(version) OR version < :v",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=_values(values),
            )
        except ClientError as error:
            if error.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def touch_node(self, cluster: str, instance_id: str, seen_at: datetime) -> None:
        """Remember that `instance_id` is a node of `cluster` (once per process per node)."""
        if (cluster, instance_id) in self._known_nodes:
            return
        try:
            self._call(
                "update_item",
                Key=_item({"pk": f"CLUSTER#{cluster}", "sk": f"NODE#{instance_id}"}),
                UpdateExpression=(
                    "SET #type = :type, cluster = :cluster, instance_id = :instance, gsi1pk = :g1p, "
                    "gsi1sk = :g1s, first_seen_at = if_not_exists(first_seen_at, :seen)"
                ),
                # A node that has left stays gone, whatever late events say.
                ConditionExpression="attribute_not_exists(left_at)",
                ExpressionAttributeNames={"#type": "type"},
                ExpressionAttributeValues=_values(
                    {
                        ":type": "node",
                        ":cluster": cluster,
                        ":instance": instance_id,
                        ":g1p": f"NODE#{instance_id}",
                        ":g1s": "#NODE",
                        ":seen": iso(seen_at),
                    }
                ),
            )
        except ClientError as error:
            if error.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
        self._known_nodes.add((cluster, instance_id))

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
        """A cluster's current images and its live nodes (one Query)."""
        images, nodes = [], []
        for item in self._query(
            KeyConditionExpression="pk = :pk", ExpressionAttributeValues=_values({":pk": f"CLUSTER#{cluster}"})
        ):
            if item["sk"].startswith("TAG#"):
                images.append(item)
            elif item["sk"].startswith("NODE#") and not item.get("left_at"):
                nodes.append(item)
        return images, nodes

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
