"""`make bench`: every benchmark, then docs/benchmarks.md from their figures."""

from __future__ import annotations

import sys

from bench import node_bench, report


def main() -> int:
    failed = []
    for name, benchmark in (("node", node_bench.main),):
        print(f"== {name}", flush=True)
        if benchmark() != 0:
            failed.append(name)
    report.main()
    if failed:
        print(f"benchmarks that could not run: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
