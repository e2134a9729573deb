"""The audit table as the handlers and the CLI use it: one object, one aggregate per kind of
item, each named at the call site (`table.catalog.record_push(...)`, `table.nodes.joined(...)`).

- `catalog`: tags, images and the current images of each cluster (catalog.py)
- `commands`: sent commands and the claims that send each once (commands.py)
- `node_images`: each image's record on each node (node_images.py)
- `nodes`: each node's lifecycle in its cluster (nodes.py)
- `catch_ups`: the catch-up's attempts and `given-up` on node-image records (catch_ups.py)
- `queries`: the CLI's questions, answered as typed rows (queries.py, rows.py)
- `idempotency`: Powertools' idempotency records (idempotency.py)

All of them talk to DynamoDB through one `TableClient` (client.py), with the keys of keys.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from prefetcher.store.catalog import Catalog
from prefetcher.store.catch_ups import CatchUps
from prefetcher.store.client import TableClient
from prefetcher.store.commands import Commands
from prefetcher.store.idempotency import IdempotencyRecords
from prefetcher.store.node_images import NodeImages
from prefetcher.store.nodes import Nodes
from prefetcher.store.queries import Queries


@dataclass
class AuditTable:
    table_name: str
    history_ttl: timedelta = timedelta(days=90)
    client: TableClient = field(init=False, repr=False)
    catalog: Catalog = field(init=False, repr=False)
    catch_ups: CatchUps = field(init=False, repr=False)
    commands: Commands = field(init=False, repr=False)
    node_images: NodeImages = field(init=False, repr=False)
    nodes: Nodes = field(init=False, repr=False)
    queries: Queries = field(init=False, repr=False)
    idempotency: IdempotencyRecords = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.client = TableClient(self.table_name, self.history_ttl)
        self.catalog = Catalog(self.client)
        self.catch_ups = CatchUps(self.client)
        self.commands = Commands(self.client)
        self.node_images = NodeImages(self.client)
        self.nodes = Nodes(self.client)
        self.queries = Queries(self.client, self.catalog)
        self.idempotency = IdempotencyRecords(self.table_name)
