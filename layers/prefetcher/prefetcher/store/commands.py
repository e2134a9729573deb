"""Commands and send claims: what each sent command pulls and for whom (the audit path reads it
back), and the claim that makes each send happen once (send_once.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from prefetcher.refs import ImageRef
from prefetcher.store import keys
from prefetcher.store.client import TableClient
from prefetcher.store.expressions import Update
from prefetcher.timestamps import iso, parse_iso


@dataclass(frozen=True)
class CommandRecord:
    command_id: str
    kind: str  # push | join | again | inventory (its images: the Images it was given)
    cluster: str
    images: tuple[ImageRef, ...]
    requested_at: datetime
    event_id: str = ""
    instance_id: str = ""
    target: str = ""
    attempt: int = 1  # 1 for a push or a join; n + 1 for images of attempt n sent again


@dataclass(frozen=True)
class SendClaim:
    """SEND#<key> / #META as an earlier try left it."""

    claimed_at: datetime
    # (command id, requested at) once the send went out; None: the earlier try died before it
    # stored what it sent (or before it sent).
    sent: tuple[str, datetime] | None = None


class Commands:
    def __init__(self, client: TableClient) -> None:
        self._client = client
        self._cache: dict[str, CommandRecord] = {}

    def record(self, command: CommandRecord) -> None:
        self._client.put(
            {
                **keys.command(command.command_id),
                "type": "command",
                "command_id": command.command_id,
                "kind": command.kind,
                "cluster": command.cluster,
                "instance_id": command.instance_id or None,
                "target": command.target or None,
                "event_id": command.event_id or None,
                "requested_at": iso(command.requested_at),
                "attempt": command.attempt,
                "images": [
                    {"registry": i.registry, "repository": i.repository, "digest": i.digest, "tag": i.tag}
                    for i in command.images
                ],
                "expires_at": self._client.expires(command.requested_at),
            }
        )
        self._cache[command.command_id] = command

    def get(self, command_id: str) -> CommandRecord | None:
        """A recorded command (commands never change, so they are cached in memory)."""
        cached = self._cache.get(command_id)
        if cached is not None:
            return cached
        item = self._client.get(keys.command(command_id))
        if item is None:
            return None
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
            attempt=int(item.get("attempt", 1)),
        )
        self._cache[command_id] = command
        return command

    def claim_send(self, send_key: str, now: datetime) -> SendClaim | None:
        """Claim the one send of `send_key`; returns the earlier claim if there is one."""
        written = self._client.put_if(
            {
                **keys.send_claim(send_key),
                "type": "send",
                "claimed_at": iso(now),
                "expires_at": self._client.expires(now),
            },
            "attribute_not_exists(pk)",
            stored_on_failure=True,
        )
        if written.done:
            return None
        stored = written.item
        sent = (str(stored["command_id"]), parse_iso(stored["requested_at"])) if stored.get("command_id") else None
        return SendClaim(claimed_at=parse_iso(stored["claimed_at"]), sent=sent)

    def complete_send(self, send_key: str, command_id: str, requested_at: datetime) -> None:
        """The claimed send went out as `command_id`."""
        update = Update().set(command_id=command_id, requested_at=iso(requested_at))
        self._client.update(keys.send_claim(send_key), update)
