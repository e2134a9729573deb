"""DynamoDB's wire format and UpdateItem expressions: attribute values to and from their typed
form, and the one builder of update expressions the store's writes use."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

_ser = TypeSerializer()
_de = TypeDeserializer()


def serialize(value: Any) -> Any:
    # DynamoDB numbers are decimals; a float goes through its shortest repr.
    return _ser.serialize(Decimal(repr(value)) if isinstance(value, float) else value)


def to_item(values: dict[str, Any]) -> dict[str, Any]:
    """An item in DynamoDB's typed form; attributes whose value is None are left out."""
    return {key: serialize(value) for key, value in values.items() if value is not None}


def to_values(values: dict[str, Any]) -> dict[str, Any]:
    """ExpressionAttributeValues in DynamoDB's typed form."""
    return {key: serialize(value) for key, value in values.items()}


def plain(item: dict[str, Any]) -> dict[str, Any]:
    """An item from DynamoDB's typed form (numbers are Decimals)."""
    return {key: _de.deserialize(value) for key, value in item.items()}


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
        self.values[placeholder] = serialize(value)
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
        """update_item arguments. `condition` is a ConditionExpression written with this
        update's own placeholders (`name`, `value`; for example `newer_than_stored`)."""
        clauses = []
        if self._sets:
            clauses.append("SET " + ", ".join(self._sets))
        if self._adds:
            clauses.append("ADD " + ", ".join(self._adds))
        if self._removes:
            clauses.append("REMOVE " + ", ".join(self._removes))
        request: dict[str, Any] = {
            "Key": to_item(key),
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

    def exists(self) -> str:
        """A condition: the item is there (an update never creates it)."""
        return f"attribute_exists({self.name('pk')})"
