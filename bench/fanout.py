"""Fan-out: AWS calls and handler time per ECR push, for 10 to 5,000 nodes, 1 and 3 clusters.
The goal: calls that do not depend on the number of nodes."""

from __future__ import annotations

import copy
import sys
from typing import Any

from bench.common import main_of, save
from bench.harness import counting, fresh_stack, local_servers, median, timed
from devtools.local_stack.ec2_fleet import NodeSpec, launch_in_process
from tests.helpers import load_event

NODES = (10, 100, 1000, 5000)
PUSHES = 3


def run() -> dict[str, Any]:
    figures: dict[str, Any] = {"fanout_calls_per_push": {}, "fanout_calls_per_push_3_clusters": {}}
    seconds: dict[str, dict[str, float]] = {"1": {}, "3": {}}
    calls_by_operation: dict[str, dict[str, int]] = {}
    with local_servers() as servers:
        for cluster_count in (1, 3):
            names = ["ml-prod", "ml-batch", "ml-dev"][:cluster_count]
            for nodes in NODES:
                stack = fresh_stack(servers, ",".join(names))
                for n, name in enumerate(names):
                    share = nodes // cluster_count + (1 if n < nodes % cluster_count else 0)
                    launch_in_process(NodeSpec(name, "managed", "general"), share // 2)
                    launch_in_process(NodeSpec(name, "karpenter", "default"), share - share // 2)
                function = stack.functions["ImagePushFunction"]
                function.invoke(
                    copy.deepcopy(load_event("ecr-push-tagged.json"))
                )  # warm: the cold start is measured apart
                times, counts = [], []
                for push in range(PUSHES):
                    event = copy.deepcopy(load_event("ecr-push-tagged.json"))
                    event["id"] = f"bench-{cluster_count}-{nodes}-{push}"
                    event["detail"]["image-tag"] = f"bench{push}"
                    event["time"] = f"2026-11-29T11:{push:02d}:00Z"
                    with counting() as calls:
                        elapsed, result = timed(lambda e=event, f=function: f.invoke(e))
                    assert result["action"] == "sent", result
                    times.append(elapsed)
                    counts.append(sum(calls.calls.values()))
                    calls_by_operation[f"{cluster_count}x{nodes}"] = dict(calls.calls)
                key = "fanout_calls_per_push" if cluster_count == 1 else "fanout_calls_per_push_3_clusters"
                figures[key][str(nodes)] = int(median(counts))
                seconds[str(cluster_count)][str(nodes)] = round(median(times), 4)
                print(
                    f"  {cluster_count} cluster(s), {nodes} nodes: {int(median(counts))} calls, {median(times):.3f} s",
                    flush=True,
                )
    details = {"pushes_per_size": PUSHES, "handler_seconds_median": seconds, "calls_by_operation": calls_by_operation}
    save("fanout", figures, details)
    return {**figures, **details}


main = main_of(run)


if __name__ == "__main__":
    sys.exit(main())
