"""What the store's queries answer: one frozen row per kind of item, its fields named as the
item's attributes (keys.py). Times are as stored (`timestamps.iso` text: sortable, and shown as
is); numbers are plain ints and floats; an attribute an item lacks is None (or empty)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


def _text(item: dict[str, Any], name: str) -> str | None:
    value = item.get(name)
    return None if value is None else str(value)


def _float(item: dict[str, Any], name: str) -> float | None:
    value = item.get(name)
    return None if value is None else float(value)


def _int(item: dict[str, Any], name: str) -> int | None:
    value = item.get(name)
    return None if value is None else int(value)


@dataclass(frozen=True)
class TagRow:
    """TAG#<repo>:<tag> / CURRENT: the digest a tag points to now."""

    repository: str
    tag: str
    digest: str
    registry: str | None = None
    pushed_at: str | None = None
    previous_digest: str | None = None

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> TagRow:
        return cls(
            repository=str(item["repository"]),
            tag=str(item["tag"]),
            digest=str(item["digest"]),
            registry=_text(item, "registry"),
            pushed_at=_text(item, "pushed_at"),
            previous_digest=_text(item, "previous_digest"),
        )


@dataclass(frozen=True)
class ClusterImageRow:
    """CLUSTER#<cluster> / TAG#<repo>:<tag>: a current image of a cluster."""

    cluster: str | None
    repository: str
    tag: str
    digest: str
    registry: str
    pushed_at: str | None = None

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> ClusterImageRow:
        return cls(
            cluster=_text(item, "cluster"),
            repository=str(item["repository"]),
            tag=str(item["tag"]),
            digest=str(item["digest"]),
            registry=str(item["registry"]),
            pushed_at=_text(item, "pushed_at"),
        )


@dataclass(frozen=True)
class ImageRow:
    """IMAGE#<repo>@<digest> / #META: the image, its tags, and what superseded it."""

    repository: str
    digest: str
    registry: str | None = None
    tags: frozenset[str] = frozenset()
    media_type: str | None = None
    first_pushed_at: str | None = None
    superseded_by: str | None = None
    superseded_at: str | None = None
    superseded_tags: frozenset[str] = frozenset()  # the tags that moved from it to a newer digest

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> ImageRow:
        return cls(
            repository=str(item["repository"]),
            digest=str(item["digest"]),
            registry=_text(item, "registry"),
            tags=frozenset(str(t) for t in item.get("tags", ())),
            media_type=_text(item, "media_type"),
            first_pushed_at=_text(item, "first_pushed_at"),
            superseded_by=_text(item, "superseded_by"),
            superseded_at=_text(item, "superseded_at"),
            superseded_tags=frozenset(str(t) for t in item.get("superseded_tags", ())),
        )


@dataclass(frozen=True)
class NodeImageRow:
    """IMAGE#<repo>@<digest> / NODE#<instance>: an image on one node, as last reported."""

    instance_id: str
    repository: str
    digest: str
    state: str
    cluster: str | None = None
    tag: str | None = None
    holds: bool | None = None
    reason: str | None = None
    command_id: str | None = None
    requested_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    seconds: float | None = None
    bytes: int | None = None
    verified_at: str | None = None  # when an inventory last found it (present, or absent: evicted)
    last_seen_at: str | None = None  # when it was last known on the node
    expires_at: int | None = None  # the TTL (epoch seconds)

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> NodeImageRow:
        holds = item.get("holds")
        return cls(
            instance_id=str(item["instance_id"]),
            repository=str(item["repository"]),
            digest=str(item["digest"]),
            state=str(item["state"]),
            cluster=_text(item, "cluster"),
            tag=_text(item, "tag"),
            holds=None if holds is None else bool(holds),
            reason=_text(item, "reason"),
            command_id=_text(item, "command_id"),
            requested_at=_text(item, "requested_at"),
            started_at=_text(item, "started_at"),
            finished_at=_text(item, "finished_at"),
            seconds=_float(item, "seconds"),
            bytes=_int(item, "bytes"),
            verified_at=_text(item, "verified_at"),
            last_seen_at=_text(item, "last_seen_at"),
            expires_at=_int(item, "expires_at"),
        )


@dataclass(frozen=True)
class NodeRow:
    """CLUSTER#<cluster> / NODE#<instance>: a node, from its join to its leave."""

    instance_id: str
    cluster: str | None = None
    node_group: str | None = None
    kind: str | None = None
    node_state: str | None = None
    reason: str | None = None
    first_seen_at: str | None = None
    joined_at: str | None = None
    left_at: str | None = None
    left_because: str | None = None
    warm_at: str | None = None
    warm_seconds: float | None = None

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> NodeRow:
        return cls(
            instance_id=str(item["instance_id"]),
            cluster=_text(item, "cluster"),
            node_group=_text(item, "node_group"),
            kind=_text(item, "kind"),
            node_state=_text(item, "node_state"),
            reason=_text(item, "reason"),
            first_seen_at=_text(item, "first_seen_at"),
            joined_at=_text(item, "joined_at"),
            left_at=_text(item, "left_at"),
            left_because=_text(item, "left_because"),
            warm_at=_text(item, "warm_at"),
            warm_seconds=_float(item, "warm_seconds"),
        )
