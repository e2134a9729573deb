"""The catch-up's bookkeeping on node-image records (the fleet check writes it): how many
catch-up commands an image got on a node since it was last seen there, when the next may go, and
`given-up` once the budget is spent. The audit path's writes keep these attributes (they set
only their own), so a record carries its budget across the commands it causes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from prefetcher.refs import ImageRef
from prefetcher.store import keys
from prefetcher.store.client import TableClient
from prefetcher.store.expressions import Update
from prefetcher.timestamps import iso

GIVEN_UP_SUFFIX = "#given-up"  # a given-up record's version: the last command's, plus this


@dataclass(frozen=True)
class CatchUpRecord:
    """What the catch-up reads of one node's record of one image."""

    instance_id: str
    state: str
    version: str = ""
    reason: str = ""
    attempts: int = 0  # catch-up commands since `catch_up_at` began counting
    next_try_at: str = ""
    catch_up_at: str = ""  # the last catch-up's time
    catch_up_reason: str = ""  # why the last catch-up could not send, if it could not
    last_seen_at: str = ""
    verified_at: str = ""
    expires_at: int | None = None

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> CatchUpRecord:
        expires = item.get(keys.TTL_ATTRIBUTE)
        return cls(
            instance_id=str(item["instance_id"]),
            state=str(item.get("state", "")),
            version=str(item.get("version", "")),
            reason=str(item.get("reason", "")),
            attempts=int(item.get("catch_up_attempts", 0)),
            next_try_at=str(item.get("catch_up_next_try_at", "")),
            catch_up_at=str(item.get("catch_up_at", "")),
            catch_up_reason=str(item.get("catch_up_reason", "")),
            last_seen_at=str(item.get("last_seen_at", "")),
            verified_at=str(item.get("verified_at", "")),
            expires_at=None if expires is None else int(expires),
        )


class CatchUps:
    def __init__(self, client: TableClient) -> None:
        self._client = client

    def records(self, cluster: str, image: ImageRef) -> dict[str, CatchUpRecord]:
        """Every live node's record of `image` in `cluster`, by instance (one Query on gsi2)."""
        items = self._client.query(
            "gsi2pk = :pk", {":pk": keys.coverage_pk(cluster, image.repository, image.digest)}, index=keys.GSI_COVERAGE
        )
        return {str(item["instance_id"]): CatchUpRecord.from_item(item) for item in items}

    def attempted(
        self,
        cluster: str,
        image: ImageRef,
        instance_id: str,
        *,
        attempts: int,
        next_try_at: datetime,
        at: datetime,
        event_id: str,
        reason: str = "",
    ) -> bool:
        """Record catch-up attempt number `attempts` (sent, or not sendable: `reason`), once per
        fleet-check event. A node without a record gets one (in the coverage index, not holding),
        `requested` if sent, `undeliverable` with the reason if not; the audit path's news
        replaces it (it has no version)."""
        update = (
            Update()
            .set(catch_up_attempts=attempts, catch_up_next_try_at=iso(next_try_at), catch_up_at=iso(at))
            .set(catch_up_event=event_id)
            .set_if_missing(type="node-image", instance_id=instance_id, cluster=cluster, holds=False)
            .set_if_missing(repository=image.repository, digest=image.digest, tag=image.tag, registry=image.registry)
            .set_if_missing(state="undeliverable" if reason else "requested", observed_at=iso(at))
            .set_if_missing(gsi1pk=keys.node_pk(instance_id), gsi1sk=keys.image_pk(image.repository, image.digest))
            .set_if_missing(gsi2pk=keys.coverage_pk(cluster, image.repository, image.digest), gsi2sk=instance_id)
            .set_if_missing(**{keys.TTL_ATTRIBUTE: self._client.expires(at)})
        )
        if reason:
            update.set(catch_up_reason=reason[:300]).set_if_missing(reason=reason[:300])
        else:
            update.remove("catch_up_reason")
        done = update.name("catch_up_event")
        condition = f"attribute_not_exists({done}) OR {done} <> {update.value(event_id)}"
        key = keys.node_image(image.repository, image.digest, instance_id)
        return self._client.update_if(key, update, condition).done

    def given_up(self, image: ImageRef, record: CatchUpRecord, reason: str, at: datetime) -> bool:
        """The budget is spent: the record says `given-up` with the last reason (in the failure
        index), unless it changed since it was read. Any later news of the image on the node (a
        pull, an inventory finding it) has a newer version and replaces it."""
        update = Update().set(
            state="given-up", holds=False, reason=reason[:300], finished_at=iso(at), updated_at=iso(datetime.now(UTC)),
            version=record.version + GIVEN_UP_SUFFIX,
            gsi3pk=keys.failure_pk(at.astimezone(UTC).date()),
            gsi3sk=keys.failure_sk(at, record.instance_id, image.repository, image.digest),
        )  # fmt: skip
        version = update.name("version")
        if record.version:
            condition = f"{version} = {update.value(record.version)}"
        else:
            condition = f"attribute_exists({update.name('pk')}) AND attribute_not_exists({version})"
        condition += f" AND {update.name('state')} = {update.value(record.state)}"
        key = keys.node_image(image.repository, image.digest, record.instance_id)
        return self._client.update_if(key, update, condition).done
