"""Idempotency records: where Powertools keeps what each function has already done, in the
audit table under `idempotency#<function>`, expiring by the table's TTL attribute."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prefetcher import clients
from prefetcher.store import keys

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer


class IdempotencyRecords:
    def __init__(self, table_name: str) -> None:
        self._table_name = table_name

    def for_function(self, function: str) -> DynamoDBPersistenceLayer:
        """The persistence layer of `function`'s idempotency records."""
        from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer

        return DynamoDBPersistenceLayer(
            table_name=self._table_name,
            key_attr="pk",
            sort_key_attr="sk",
            static_pk_value=keys.idempotency_pk(function),
            expiry_attr=keys.TTL_ATTRIBUTE,
            boto3_client=clients.client("dynamodb"),
        )
