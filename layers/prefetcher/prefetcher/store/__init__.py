"""The audit table: one DynamoDB table, every question a Query on a key or an index.

- keys.py: the data model as code (every key and index name; its docstring lists the items)
- client.py: the one DynamoDB client (errors, pagination, TTL, the conditional write)
- expressions.py: serialization and the UpdateItem expression builder
- table.py: `AuditTable`, the facade that holds one object per aggregate:
  catalog.py, catch_ups.py, commands.py, node_images.py (verifications.py: an inventory's writes), nodes.py,
  queries.py (rows.py), idempotency.py
"""

from prefetcher.store.catalog import PushOutcome
from prefetcher.store.commands import CommandRecord, SendClaim
from prefetcher.store.rows import ClusterImageRow, ImageRow, NodeImageRow, NodeRow, TagRow
from prefetcher.store.table import AuditTable

__all__ = [
    "AuditTable",
    "ClusterImageRow",
    "CommandRecord",
    "ImageRow",
    "NodeImageRow",
    "NodeRow",
    "PushOutcome",
    "SendClaim",
    "TagRow",
]
