"""The questions the CLI asks (prefetcher_cli.reports): every one a GetItem or Queries on a key
or an index, never a Scan; answered as typed rows (rows.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prefetcher.store import keys
from prefetcher.store.catalog import Catalog
from prefetcher.store.client import TableClient
from prefetcher.store.rows import ClusterImageRow, ImageRow, NodeImageRow, NodeRow, TagRow
from prefetcher.timestamps import iso


class Queries:
    def __init__(self, client: TableClient, catalog: Catalog) -> None:
        self._client = client
        self._catalog = catalog

    def current_tag(self, repository: str, tag: str) -> TagRow | None:
        """The digest a tag points to now (one GetItem)."""
        item = self._client.get(keys.current_tag(repository, tag))
        return TagRow.from_item(item) if item is not None else None

    def image_meta(self, repository: str, digest: str) -> ImageRow | None:
        """The image's own item alone: its tags and whether a tag moved on (one GetItem)."""
        item = self._client.get(keys.image(repository, digest))
        return ImageRow.from_item(item) if item is not None else None

    def cluster_image(self, cluster: str, repository: str, tag: str) -> ClusterImageRow | None:
        """The digest `repository:tag` is current at in one cluster (one GetItem)."""
        item = self._client.get(keys.cluster_image(cluster, repository, tag))
        return ClusterImageRow.from_item(item) if item is not None else None

    def image(self, repository: str, digest: str) -> tuple[ImageRow | None, list[NodeImageRow]]:
        """The image's own item and every node's record of it (one Query)."""
        meta: ImageRow | None = None
        nodes = []
        for item in self._client.query("pk = :pk", {":pk": keys.image_pk(repository, digest)}):
            if item["sk"] == keys.META:
                meta = ImageRow.from_item(item)
            else:
                nodes.append(NodeImageRow.from_item(item))
        return meta, nodes

    def node(self, instance_id: str) -> tuple[NodeRow | None, list[NodeImageRow]]:
        """A node's item and its records of every image (one Query on gsi1)."""
        node: NodeRow | None = None
        images = []
        for item in self._client.query("gsi1pk = :pk", {":pk": keys.node_pk(instance_id)}, index=keys.GSI_NODE):
            if item["gsi1sk"] == keys.NODE_ITEM:
                node = NodeRow.from_item(item)
            else:
                images.append(NodeImageRow.from_item(item))
        return node, images

    def clusters(self) -> list[str]:
        """Every cluster images were sent to (one Query)."""
        return [str(item["cluster"]) for item in self._client.query("pk = :pk", {":pk": keys.CLUSTERS})]

    def cluster(self, cluster: str) -> tuple[list[ClusterImageRow], list[NodeRow]]:
        """A cluster's current images (one Query) and its live nodes (one Query on gsi2: nodes
        that left are not in it, so they are not read)."""
        return self._catalog.cluster_images(cluster), self.live_nodes(cluster)

    def live_nodes(self, cluster: str) -> list[NodeRow]:
        """A cluster's live nodes: one Query on gsi2 (nodes that left are not in it)."""
        return [
            NodeRow.from_item(item)
            for item in self._client.query("gsi2pk = :pk", {":pk": keys.live_pk(cluster)}, index=keys.GSI_COVERAGE)
        ]

    def coverage(self, cluster: str, repository: str, digest: str) -> list[NodeImageRow]:
        """Every live node's record of one image in one cluster (one Query on gsi2)."""
        return [
            NodeImageRow.from_item(item)
            for item in self._client.query(
                "gsi2pk = :pk", {":pk": keys.coverage_pk(cluster, repository, digest)}, index=keys.GSI_COVERAGE
            )
        ]

    def failures(self, since: datetime, until: datetime | None = None) -> list[NodeImageRow]:
        """Current failures that ended after `since`, newest first (one Query per day)."""
        until = until or datetime.now(UTC)
        found: list[NodeImageRow] = []
        day = until.astimezone(UTC).date()
        while day >= since.astimezone(UTC).date():
            found += (
                NodeImageRow.from_item(item)
                for item in self._client.query(
                    "gsi3pk = :pk AND gsi3sk >= :since",
                    {":pk": keys.failure_pk(day), ":since": iso(since)},
                    index=keys.GSI_FAILURES,
                    newest_first=True,
                )
            )
            day -= timedelta(days=1)
        return found
