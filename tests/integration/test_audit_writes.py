"""AuditTable.node_images.apply_many, the audit path's batched writes, against DynamoDB Local:
per record it must decide exactly as one conditional UpdateItem (`apply`) would, in fewer
requests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prefetcher import clients
from prefetcher.refs import ImageRef
from prefetcher.states import NodeImageUpdate, NodeState
from prefetcher.store import AuditTable, keys

from tests.helpers import CallCounter

IMAGE = ImageRef("123456789012.dkr.ecr.us-east-1.amazonaws.com", "ml/trainer", "sha256:" + "ab" * 32, "v1")
T0 = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)
OLD_COMMAND = "11111111-1111-4111-8111-111111111111"
NEW_COMMAND = "22222222-2222-4222-8222-222222222222"


def update(node: int, state: NodeState, command: str = OLD_COMMAND, requested: datetime = T0) -> NodeImageUpdate:
    return NodeImageUpdate(
        image=IMAGE,
        instance_id=f"i-{node:017x}",
        cluster="ml-prod",
        command_id=command,
        requested_at=requested,
        state=state,
        observed_at=requested + timedelta(seconds=5),
        finished_at=requested + timedelta(seconds=5) if state.rank == 2 else None,
    )


def states(table: AuditTable) -> dict[str, str]:
    _, nodes = table.queries.image(IMAGE.repository, IMAGE.digest)
    return {n.instance_id: n.state for n in nodes}


def test_batched_writes_decide_per_record_as_single_conditional_writes_do(stack):
    # Given 40 nodes' in-progress updates, so that the writes span two statement batches (25 each) sent side by side.
    table = AuditTable(stack.output("AuditTable"))
    first = [update(n, NodeState.IN_PROGRESS) for n in range(40)]
    # and, within one call, two updates of one record: only the newer is written.
    first += [update(0, NodeState.REQUESTED), update(1, NodeState.CACHED)]
    # When they are written in one call
    with CallCounter() as counter:
        written = table.node_images.apply_many(first)
    # Then each is decided as a single conditional write would decide it, in three requests
    assert written == [True] + [False] + [True] * 38 + [False, True]
    # In progress: inserted at once; Success of a record not yet there: an update, then an insert.
    assert counter.count("dynamodb.BatchExecuteStatement") == 3
    assert counter.count("dynamodb.UpdateItem") == 0
    after_first = states(table)
    assert len(after_first) == 40
    assert after_first["i-00000000000000000"] == "in-progress"
    assert after_first["i-00000000000000001"] == "cached"

    # Given a record written by something that sets no version (`apply` admits any update there)
    ddb = clients.client("dynamodb")
    ddb.put_item(
        TableName=table.table_name,
        Item={"pk": {"S": keys.image_pk(IMAGE.repository, IMAGE.digest)}, "sk": {"S": "NODE#i-000000000000000ff"},
              "instance_id": {"S": "i-000000000000000ff"}, "state": {"S": "requested"}},
    )  # fmt: skip
    # and updates forward, stale, duplicated, of a newer and of an older command
    second = [update(n, NodeState.CACHED) for n in range(2, 12)]  # forward: written
    second += [update(1, NodeState.IN_PROGRESS)]  # late InProgress after Success: stale
    second += [update(n, NodeState.IN_PROGRESS) for n in range(12, 20)]  # duplicates: stale
    newer, older = T0 + timedelta(hours=1), T0 - timedelta(hours=1)
    second += [update(n, NodeState.REQUESTED, NEW_COMMAND, newer) for n in range(20, 25)]  # a newer command
    second += [update(0xFF, NodeState.FAILED)]  # the record without a version
    second += [update(n, NodeState.REQUESTED, NEW_COMMAND, older) for n in range(25, 27)]  # an older one
    # When they are written in one call
    with CallCounter() as counter:
        written = table.node_images.apply_many(second)
    # Then again each is decided as a single conditional write would decide it
    assert written == [True] * 10 + [False] + [False] * 8 + [True] * 5 + [True] + [False] * 2
    # Ends as updates; requested and in progress as inserts, which meet records, then as updates.
    assert counter.count("dynamodb.BatchExecuteStatement") == 3
    assert counter.count("dynamodb.UpdateItem") == 1  # the record without a version, by `apply`

    final = states(table)
    assert {final[f"i-{n:017x}"] for n in range(2, 12)} == {"cached"}
    assert final["i-00000000000000001"] == "cached"
    assert {final[f"i-{n:017x}"] for n in range(12, 20)} == {"in-progress"}
    assert {final[f"i-{n:017x}"] for n in range(20, 25)} == {"requested"}
    assert final["i-000000000000000ff"] == "failed"
    assert {final[f"i-{n:017x}"] for n in range(25, 27)} == {"in-progress"}


def test_an_inventorys_results_are_written_in_partiql_batches_and_a_replay_changes_nothing(stack):
    from prefetcher.inventory import Reconcile, Verification

    # Given 30 nodes holding the image (cached), 5 that failed it, and 5 with no record
    table = AuditTable(stack.output("AuditTable"))
    table.node_images.apply_many([update(n, NodeState.CACHED) for n in range(30)])
    table.node_images.apply_many([update(n, NodeState.FAILED) for n in range(30, 35)])
    later = T0 + timedelta(hours=2)

    def found(node: int, present: bool) -> Verification:
        return Verification(IMAGE, f"i-{node:017x}", "ml-prod", NEW_COMMAND, later, later, present)

    # and an inventory that finds 25 of the cached present, 5 absent, the failed ones and the unrecorded ones present
    inventory = [found(n, n < 25) for n in range(30)] + [found(n, True) for n in range(30, 40)]
    # When its verifications are written
    with CallCounter() as counter:
        done = table.node_images.verify_many(inventory)
    # Then each is reconciled, in two rounds of batches (the guess, then what the records as stored decide)
    assert done == [Reconcile.REFRESH] * 25 + [Reconcile.EVICT] * 5 + [Reconcile.PRESENT] * 10
    assert counter.count("dynamodb.BatchExecuteStatement") == 3 and counter.count("dynamodb.UpdateItem") == 0
    after = states(table)
    assert [after[f"i-{n:017x}"] for n in range(40)] == ["cached"] * 25 + ["evicted"] * 5 + ["present"] * 10
    # And the same verifications again write nothing
    with CallCounter() as counter:
        assert table.node_images.verify_many(inventory) == [Reconcile.STALE] * 40
    assert counter.count("dynamodb.BatchExecuteStatement") == 2


def test_a_record_written_before_last_seen_at_existed_is_evicted_with_its_pulls_end_as_last_seen(stack):
    from prefetcher.inventory import Reconcile, Verification

    # Given a cached record as the audit path wrote it before `last_seen_at` existed
    table = AuditTable(stack.output("AuditTable"))
    table.node_images.apply(update(7, NodeState.CACHED))
    key = keys.node_image(IMAGE.repository, IMAGE.digest, f"i-{7:017x}")
    clients.client("dynamodb").update_item(
        TableName=table.table_name,
        Key={"pk": {"S": key["pk"]}, "sk": {"S": key["sk"]}},
        UpdateExpression="REMOVE last_seen_at",
    )
    finished = table.client.get(key)["finished_at"]
    # When an inventory finds it absent
    later = T0 + timedelta(hours=2)
    gone = Verification(IMAGE, f"i-{7:017x}", "ml-prod", NEW_COMMAND, later, later, False)
    assert table.node_images.verify_many([gone]) == [Reconcile.EVICT]
    # Then it is evicted, last seen when its pull ended
    stored = table.client.get(key)
    assert (stored["state"], stored["last_seen_at"], stored["holds"]) == ("evicted", finished, False)
