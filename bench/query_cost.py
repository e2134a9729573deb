"""Query cost: each CLI question on a table holding 5,000 nodes x 20 images with history, as
items read per item returned and median latency, beside a Scan that answers the same question."""

from __future__ import annotations

import hashlib
import sys
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

from prefetcher import clients
from prefetcher.store import AuditTable, keys
from prefetcher.timestamps import iso
from prefetcher_cli import reports

from bench.common import main_of, save
from bench.harness import counting, fresh_stack, local_servers, median, timed

NODES = 5000
IMAGES = 20
SUPERSEDED_PER_IMAGE = 1  # history: the tags of the first HISTORY_IMAGES images moved once; their
HISTORY_IMAGES = 5  # old digests' records stay (in the image partitions, not in coverage)
LEFT = 500  # history: nodes that left the cluster
FAILED_EVERY = 50  # one node-image in 50 is currently failed
RUNS = 3
SCAN_SEGMENTS = 4
REGISTRY = "123456789012.dkr.ecr.us-east-1.amazonaws.com"


def digest(*parts: object) -> str:
    return "sha256:" + hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()


def s(value: object) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, int | float):
        return {"N": str(value)}
    return {"S": str(value)}


def populate(table: str) -> dict[str, Any]:
    """Items as the functions write them (see prefetcher/store), written with BatchWriteItem for speed."""
    ddb = clients.client("dynamodb")
    now = datetime.now(UTC)
    items: list[dict[str, Any]] = []
    cluster = "ml-prod"
    nodes = [f"i-{n:017x}" for n in range(NODES + LEFT)]
    for n, node in enumerate(nodes):
        live = n < NODES
        node_item = {**keys.node(cluster, node), "type": "node", "cluster": cluster,
                     "instance_id": node, "joined_at": iso(now - timedelta(days=2)), "gsi1pk": keys.node_pk(node),
                     "gsi1sk": keys.NODE_ITEM, "node_state": "warm" if live else "left"}  # fmt: skip
        if live:
            node_item |= {"gsi2pk": keys.live_pk(cluster), "gsi2sk": node}
        else:
            node_item["left_at"] = iso(now - timedelta(days=1))
        items.append(node_item)
    for i in range(IMAGES):
        repo, tag = f"team/app{i}", "v1"
        current = digest(repo, "current")
        history = [digest(repo, "old", h) for h in range(SUPERSEDED_PER_IMAGE)] if i < HISTORY_IMAGES else []
        items.append({**keys.current_tag(repo, tag), "type": "tag", "repository": repo, "tag": tag,
                      "registry": REGISTRY, "digest": current, "pushed_at": iso(now)})  # fmt: skip
        items.append({**keys.cluster_image(cluster, repo, tag), "type": "cluster-image", "cluster": cluster,
                      "repository": repo, "tag": tag, "registry": REGISTRY, "digest": current, "pushed_at": iso(now)})  # fmt: skip
        for d in [current, *history]:
            items.append({**keys.image(repo, d), "type": "image", "repository": repo, "digest": d,
                          "registry": REGISTRY, **({"superseded_by": current} if d != current else {})})  # fmt: skip
            for n, node in enumerate(nodes):
                live = n < NODES and d == current
                failed = live and (n * IMAGES + i) % FAILED_EVERY == 0
                record = {**keys.node_image(repo, d, node), "type": "node-image", "instance_id": node,
                          "cluster": cluster, "repository": repo, "digest": d, "tag": tag, "registry": REGISTRY,
                          "state": "failed" if failed else "cached", "holds": not failed,
                          "requested_at": iso(now - timedelta(minutes=30)), "finished_at": iso(now - timedelta(minutes=20)),
                          "seconds": 41.5, "bytes": 1287651328, "command_id": "c", "version": "v",
                          "gsi1pk": keys.node_pk(node), "gsi1sk": keys.image_pk(repo, d)}  # fmt: skip
                if failed:
                    record |= {"reason": "ctr: 401 Unauthorized", "gsi3pk": keys.failure_pk(now.date()),
                               "gsi3sk": keys.failure_sk(now, node, repo, d)}  # fmt: skip
                if live:
                    record |= {"gsi2pk": keys.coverage_pk(cluster, repo, d), "gsi2sk": node}
                items.append(record)

    def write(start: int) -> None:
        request = {
            table: [{"PutRequest": {"Item": {k: s(v) for k, v in item.items()}}} for item in items[start : start + 25]]
        }
        while request:
            request = ddb.batch_write_item(RequestItems=request).get("UnprocessedItems") or {}

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(write, range(0, len(items), 25)))
    return {
        "items": len(items),
        "nodes": NODES,
        "left": LEFT,
        "images": IMAGES,
        "superseded_per_image": SUPERSEDED_PER_IMAGE,
        "images_with_history": HISTORY_IMAGES,
    }


def returned_items(view: dict[str, Any], question: str) -> int:
    """Items the answer is made of."""
    if question == "status":
        return 1 + len(view["nodes"])  # the image and its nodes
    if question == "node":
        return 1 + len(view["images"])
    if question == "coverage":
        return sum(
            len(c["images"]) + len(c["node_list"]) + sum(sum(i["states"].values()) for i in c["images"])
            for c in view["clusters"]
        )
    return len(view["failures"])


# The same questions as Scan filters (on the attributes the CLI's queries use as keys).
SCAN_FILTERS: dict[str, Callable[[dict[str, Any]], bool]] = {
    "status": lambda item: item["pk"]["S"] == keys.image_pk("team/app7", digest("team/app7", "current")),
    "node": lambda item: item.get("gsi1pk", {}).get("S") == keys.node_pk("i-00000000000000007"),
    "coverage": lambda item: (
        item.get("gsi2pk", {}).get("S", "").startswith(("COVER#ml-prod#", "LIVE#ml-prod"))
        or (item["pk"]["S"] == keys.cluster_pk("ml-prod") and item["sk"]["S"].startswith(keys.TAG_PREFIX))
    ),
    "failures": lambda item: item.get("gsi3pk", {}).get("S", "").startswith("FAIL#"),
}


def scan_answers(table: str) -> dict[str, int]:
    """Every question by Scan, items kept per question. A Scan reads every item of the table
    whatever its FilterExpression (the filter is applied after the read, and billed as read), so
    one pass stands for the Scan of each question: the same items read, the same capacity; the
    filters are applied to its pages here instead of in DynamoDB."""
    ddb = clients.client("dynamodb")

    def segment(number: int) -> Counter[str]:
        kept: Counter[str] = Counter()
        start = None
        while True:
            page = ddb.scan(TableName=table, ReturnConsumedCapacity="TOTAL", Segment=number, TotalSegments=SCAN_SEGMENTS,
                            ProjectionExpression="pk, sk, gsi1pk, gsi2pk, gsi3pk",
                            **({"ExclusiveStartKey": start} if start else {}))  # fmt: skip
            for item in page["Items"]:
                kept.update(question for question, keep in SCAN_FILTERS.items() if keep(item))
            start = page.get("LastEvaluatedKey")
            if not start:
                return kept

    # A parallel Scan (segments side by side), as one would run it to answer faster.
    with ThreadPoolExecutor(max_workers=SCAN_SEGMENTS) as pool:
        total = sum(pool.map(segment, range(SCAN_SEGMENTS)), Counter())
    return {question: total[question] for question in SCAN_FILTERS}


def run() -> dict[str, Any]:
    with local_servers() as servers:
        stack = fresh_stack(servers)
        name = stack.output("AuditTable")
        shape = populate(name)
        table = AuditTable(name)
        questions = {
            "status": lambda: reports.status(table, "team/app7:v1"),
            "node": lambda: reports.node(table, "i-00000000000000007"),
            "coverage": lambda: reports.coverage(table, "ml-prod"),
            "failures": lambda: reports.failures(table, timedelta(hours=24)),
        }
        details: dict[str, Any] = {"table": shape, "runs": RUNS}
        with counting() as scan_calls:
            scan_seconds, scan_kept = timed(lambda: scan_answers(name))
        worst = 0.0
        for question, ask in questions.items():
            latencies = []
            for _ in range(RUNS):
                with counting() as calls:
                    elapsed, view = timed(ask)
                latencies.append(elapsed)
            returned = returned_items(view, question)
            read_per_returned = calls.scanned / max(returned, 1)
            kept = scan_kept[question]
            details[question] = {
                "items_returned": returned,
                "items_read": calls.scanned,
                "items_read_per_returned": round(read_per_returned, 3),
                "requests": dict(calls.calls),
                "read_capacity_units": round(calls.capacity, 1),
                "median_seconds": round(median(latencies), 4),
                "scan": {"items_read": scan_calls.scanned, "items_kept": kept,
                         "items_read_per_returned": round(scan_calls.scanned / max(kept, 1), 1),
                         "read_capacity_units": round(scan_calls.capacity, 1),
                         "seconds": round(scan_seconds, 3)},
            }  # fmt: skip
            worst = max(worst, read_per_returned)
            print(f"  {question}: {read_per_returned:.3f} read/returned, {median(latencies) * 1000:.0f} ms "
                  f"(scan: {scan_calls.scanned / max(kept, 1):.0f} read/returned, {scan_seconds * 1000:.0f} ms)",
                  flush=True)  # fmt: skip
    figures = {"query_items_read_per_returned": round(worst, 3)}
    save("query_cost", figures, details)
    return {**figures, **details}


main = main_of(run)


if __name__ == "__main__":
    sys.exit(main())
