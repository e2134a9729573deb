"""The one way the store talks to DynamoDB: error translation, pagination, TTL, serialization
and the conditional write (a write whose condition failed is an answer, not an error)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError, EndpointConnectionError

from prefetcher import clients
from prefetcher.errors import EndpointUnreachableError, TableNotFoundError
from prefetcher.store.expressions import Update, plain, to_item, to_values
from prefetcher.store.keys import Key


@dataclass(frozen=True)
class Written:
    """What a conditional write did."""

    done: bool  # False: its condition failed, nothing was written
    # After a write: the item as written, when asked for (ALL_NEW). After a failed condition: the
    # item as stored, when asked for (ALL_OLD); empty if there is none.
    item: dict[str, Any] = field(default_factory=dict)


@dataclass
class TableClient:
    table_name: str
    history_ttl: timedelta = timedelta(days=90)

    @property
    def _ddb(self) -> Any:
        # Looked up on every call: clients are per region and endpoint, and tests swap them.
        return clients.client("dynamodb")

    def expires(self, moment: datetime) -> int:
        """The TTL (`expires_at`) of a history item about `moment`."""
        return int((moment + self.history_ttl).timestamp())

    @contextmanager
    def _translated(self) -> Iterator[None]:
        try:
            yield
        except ClientError as error:
            if error.response["Error"]["Code"] == "ResourceNotFoundException":
                raise TableNotFoundError(f"table {self.table_name} does not exist") from None
            raise
        except EndpointConnectionError as error:
            raise EndpointUnreachableError(str(error)) from None

    def call(self, operation: str, **kwargs: Any) -> Any:
        with self._translated():
            return getattr(self._ddb, operation)(TableName=self.table_name, **kwargs)

    # ---- reads --------------------------------------------------------------------------------

    def get(self, key: Key) -> dict[str, Any] | None:
        answer = self.call("get_item", Key=to_item(key))
        return plain(answer["Item"]) if "Item" in answer else None

    def query(
        self, condition: str, values: dict[str, Any], *, index: str = "", newest_first: bool = False
    ) -> Iterator[dict[str, Any]]:
        """Every item of a Query, page after page."""
        request: dict[str, Any] = {
            **({"IndexName": index} if index else {}),
            "KeyConditionExpression": condition,
            "ExpressionAttributeValues": to_values(values),
            **({"ScanIndexForward": False} if newest_first else {}),
        }
        start: dict[str, Any] | None = None
        while True:
            page = self.call("query", **request, **({"ExclusiveStartKey": start} if start else {}))
            for item in page.get("Items", []):
                yield plain(item)
            start = page.get("LastEvaluatedKey")
            if not start:
                return

    # ---- writes -------------------------------------------------------------------------------

    def put(self, values: dict[str, Any]) -> None:
        self.call("put_item", Item=to_item(values))

    def update(self, key: Key, update: Update) -> None:
        self.call("update_item", **update.request(key))

    def put_if(self, values: dict[str, Any], condition: str, *, stored_on_failure: bool = False) -> Written:
        """PutItem under `condition` (written with the item's own attribute names)."""
        return self._write_if(
            "put_item",
            Item=to_item(values),
            ConditionExpression=condition,
            **({"ReturnValuesOnConditionCheckFailure": "ALL_OLD"} if stored_on_failure else {}),
        )

    def update_if(
        self, key: Key, update: Update, condition: str, *, new_on_success: bool = False, stored_on_failure: bool = False
    ) -> Written:
        """UpdateItem under `condition` (written with `update`'s placeholders)."""
        extra: dict[str, Any] = {
            **({"ReturnValues": "ALL_NEW"} if new_on_success else {}),
            **({"ReturnValuesOnConditionCheckFailure": "ALL_OLD"} if stored_on_failure else {}),
        }
        return self._write_if("update_item", **update.request(key, condition, **extra))

    def _write_if(self, operation: str, **request: Any) -> Written:
        """The one conditional write: a failed condition is an answer (`done` False), anything
        else that goes wrong is raised."""
        try:
            answer = self.call(operation, **request)
        except ClientError as error:
            if error.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
            return Written(done=False, item=plain(dict(error.response.get("Item", {}))))  # type: ignore[call-overload]
        return Written(done=True, item=plain(answer.get("Attributes", {})))

    def execute_batch(self, statements: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """One BatchExecuteStatement (PartiQL, at most 25 statements): each statement's answer."""
        with self._translated():
            answer = self._ddb.batch_execute_statement(Statements=statements)
        responses: list[dict[str, Any]] = answer["Responses"]
        return responses
