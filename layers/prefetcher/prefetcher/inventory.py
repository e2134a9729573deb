"""The inventory's meaning: what a node says it holds (document parameter `Mode=inventory`,
sent by verify.py) and what that does to its image records (store/verifications.py writes it).

Each node answers an inventory with one line per image it knows, `present` or `absent` (the
cluster's current images it was given, and the images this tool pulled there before), then its
disk. Pure: no AWS calls. `reconcile` says what one line does to the record as stored.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from prefetcher.agent_output import read_agent_output
from prefetcher.refs import ImageRef
from prefetcher.states import Invocation, NodeState, version

KIND = "inventory"  # the kind of an inventory's command record (store/commands.py)
HOLDING = (NodeState.CACHED, NodeState.PRESENT)


@dataclass(frozen=True)
class Verification:
    """What one inventory invocation found of one image on one node."""

    image: ImageRef
    instance_id: str
    cluster: str
    command_id: str
    requested_at: datetime  # the inventory command's
    verified_at: datetime  # when the node looked (the invocation's end)
    present: bool
    bytes: int | None = None
    pinned: bool = False

    @property
    def version(self) -> str:
        """Ordered with the pulls' versions (states.version): an inventory requested after a
        pull is newer news than it, one requested before is older, a replay is equal."""
        return version(self.requested_at, self.command_id, NodeState.PRESENT)


class Reconcile(enum.StrEnum):
    REFRESH = "refresh"  # held, found present: verified_at, last_seen_at and the expiry move on
    EVICT = "evict"  # held, found absent: evicted (last_seen_at kept)
    PRESENT = "present"  # found present, recorded as not holding it (or not recorded): present
    NOTHING = "nothing"  # absent and not recorded as held: the catch-up's business
    STALE = "stale"  # the record holds newer news (a later pull or inventory), or this one again


def reconcile(stored_state: str | None, stored_version: str | None, found: Verification) -> Reconcile:
    """What `found` does to the record as stored (None: no record)."""
    if stored_state is None:
        return Reconcile.PRESENT if found.present else Reconcile.NOTHING
    if stored_version is not None and stored_version >= found.version:
        return Reconcile.STALE
    held = stored_state in HOLDING
    if found.present:
        return Reconcile.REFRESH if held else Reconcile.PRESENT
    return Reconcile.EVICT if held else Reconcile.NOTHING


def verifications_for_status(
    *,
    command_id: str,
    requested_at: datetime,
    cluster: str,
    instance_id: str,
    observed_at: datetime,
    invocation: Invocation | None,
) -> list[Verification]:
    """The verifications an inventory invocation's end makes: one per `present` or `absent`
    line. No line (undeliverable, timed out, a fatal error) verifies nothing."""
    if invocation is None:
        return []
    output = read_agent_output(invocation.stdout)
    verified_at = invocation.finished_at or observed_at
    found = []
    for line in output.results.values():
        if line.outcome not in ("present", "absent"):
            continue
        try:
            image = ImageRef.parse_agent_item(line.image)
            if line.tag:
                image = ImageRef(image.registry, image.repository, image.digest, line.tag)
        except ValueError:
            continue  # not an image reference of ours: nothing to record
        found.append(
            Verification(
                image=image, instance_id=instance_id, cluster=cluster, command_id=command_id,
                requested_at=requested_at, verified_at=verified_at, present=line.outcome == "present",
                bytes=line.bytes or None, pinned=line.pinned,
            )
        )  # fmt: skip
    return found
