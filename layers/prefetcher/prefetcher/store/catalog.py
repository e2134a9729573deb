"""The catalog (the push path writes it, the join reads it): which digest each tag points to,
which images are current in each cluster, and each image's tags and supersession."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from prefetcher.refs import ImageRef
from prefetcher.store import keys
from prefetcher.store.client import TableClient
from prefetcher.store.expressions import Update
from prefetcher.store.rows import ClusterImageRow
from prefetcher.timestamps import iso


@dataclass(frozen=True)
class PushOutcome:
    current: bool  # False: a newer push of the same tag is already recorded
    previous_digest: str = ""
    newer_digest: str = ""


class Catalog:
    def __init__(self, client: TableClient) -> None:
        self._client = client

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
        outcome = self._point_tag(image, version, pushed, event_id, now)
        self._record_image(image, outcome, pushed_at, media_type, now)
        if not outcome.current:
            return outcome
        if outcome.previous_digest:
            older = Update().set(superseded_by=image.digest, superseded_at=now).add(superseded_tags={image.tag})
            self._client.update_if(keys.image(image.repository, outcome.previous_digest), older, older.exists())
        for cluster in clusters:
            self._record_cluster_image(cluster, image, version, pushed, now)
        return outcome

    def _point_tag(self, image: ImageRef, version: str, pushed: str, event_id: str, now: str) -> PushOutcome:
        """The tag's CURRENT item points to `image`, unless a newer push of it is recorded."""
        update = (
            Update()
            .set(type="tag", repository=image.repository, tag=image.tag, registry=image.registry)
            .copy_to("previous_digest", "digest", "")
            .set(digest=image.digest, version=version, pushed_at=pushed, event_id=event_id, updated_at=now)
        )
        written = self._client.update_if(
            keys.current_tag(image.repository, image.tag),
            update,
            update.newer_than_stored(version),
            new_on_success=True,
            stored_on_failure=True,
        )
        if written.done or written.item.get("version") == version:
            # Written, or the same push again (a retry after a crash): finish what it started.
            previous = written.item.get("previous_digest", "")
            return PushOutcome(current=True, previous_digest=previous if previous != image.digest else "")
        return PushOutcome(current=False, newer_digest=str(written.item.get("digest", "")))

    def _record_image(
        self, image: ImageRef, outcome: PushOutcome, pushed_at: datetime, media_type: str, now: str
    ) -> None:
        meta = (
            Update()
            .set(type="image", repository=image.repository, digest=image.digest, registry=image.registry)
            .set(media_type=media_type or None, updated_at=now, expires_at=self._client.expires(pushed_at))
            .set_if_missing(first_pushed_at=iso(pushed_at))
            .add(tags={image.tag})
        )
        if not outcome.current:
            # Pushed, but a newer push of the tag got there first: recorded as superseded.
            meta.set(superseded_by=outcome.newer_digest, superseded_at=now).add(superseded_tags={image.tag})
        self._client.update(keys.image(image.repository, image.digest), meta)

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
        self._client.update_if(
            keys.cluster_image(cluster, image.repository, image.tag),
            update,
            update.newer_than_stored(version, allow_equal=True),
        )
        cluster_key = keys.cluster_listed(cluster)
        self._client.put({**cluster_key, "type": "cluster", "cluster": cluster})

    def cluster_images(self, cluster: str) -> list[ClusterImageRow]:
        """A cluster's current images: one Query."""
        return [
            ClusterImageRow.from_item(item)
            for item in self._client.query(
                "pk = :pk AND begins_with(sk, :tag)", {":pk": keys.cluster_pk(cluster), ":tag": keys.TAG_PREFIX}
            )
        ]

    def current_images(self, cluster: str) -> list[ImageRef]:
        """Every current (not superseded) image of a cluster: one Query (of the catalog only; a
        join does not read the cluster's live nodes)."""
        return sorted(
            ImageRef(registry=i.registry, repository=i.repository, digest=i.digest, tag=i.tag)
            for i in self.cluster_images(cluster)
        )
