"""`make bench`: every benchmark, then docs/benchmarks.md from their figures (one run)."""

from __future__ import annotations

import sys
import time

from bench import audit_ingest, cold_start, fanout, inventory, node_bench, package_size, query_cost, report
from bench.common import save


def main() -> int:
    failed = []
    took: dict[str, int] = {}
    started = time.monotonic()
    for name, benchmark in (
        ("package size", package_size.main),
        ("cold start", cold_start.main),
        ("fan-out", fanout.main),
        ("audit ingest", audit_ingest.main),
        ("inventory", inventory.main),
        ("query cost", query_cost.main),
        ("node agent", node_bench.main),
    ):
        print(f"== {name}", flush=True)
        began = time.monotonic()
        if benchmark() != 0:
            failed.append(name)
        took[name] = round(time.monotonic() - began)
        print(f"== {name}: {took[name]} s", flush=True)
    save("run", {}, {"seconds_by_benchmark": took, "seconds_total": round(time.monotonic() - started)})
    report.main()
    print(f"benchmarks took {time.monotonic() - started:.0f} s")
    if failed:
        print(f"benchmarks that could not run: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
