"""Node agent benchmarks, on a real containerd and registry (needs root, like the node suite).

- four images pulled in parallel (Parallelism 4) vs one after another (Parallelism 1);
- an image already present (the agent's fast path);
- the agent's time for one image vs a bare `ctr images pull` of the same image.

Each pull runs on a fresh containerd, so nothing is cached between measurements; the two sides
of each ratio alternate, run after run, so machine noise hits both alike."""

from __future__ import annotations

import json
import random
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.common import median, save, timed
from devtools.local_stack import containerd_nodes, oci_images, servers
from devtools.local_stack.ssm_agent import Report

RUNS = 3
IMAGE_MIB = 64  # each of the four images
SINGLE_MIB = 256  # the agent vs bare ctr image


def fresh_containerd() -> containerd_nodes.Containerd:
    return containerd_nodes.Containerd(Path(tempfile.mkdtemp(prefix="ctd-", dir="/tmp"))).start()


def dispose(containerd: containerd_nodes.Containerd) -> None:
    containerd.stop()
    shutil.rmtree(containerd.base, ignore_errors=True)


def main() -> int:
    problem = containerd_nodes.unavailable()
    if problem:
        print(f"node benchmarks need root with containerd, docker-registry, skopeo: {problem}", file=sys.stderr)
        return 1
    base = Path(tempfile.mkdtemp(prefix="prefetch-bench-"))
    registry = servers.Registry(base / "registry").start()
    try:
        return run(base, registry)
    finally:
        registry.stop()
        shutil.rmtree(base, ignore_errors=True)


def push(base: Path, registry: servers.Registry, name: str, mib: int, seed: int) -> str:
    layout = base / "layouts" / name
    rng = random.Random(seed)
    files = {f"data{i:03d}": rng.randbytes(16 * 1024 * 1024) for i in range(mib // 16)}
    built = oci_images.build(layout, files)
    oci_images.push(layout, f"{registry.host}/bench/{name}:v1")
    return f"{registry.host}/bench/{name}:v1@{built.digest}"


def run(base: Path, registry: servers.Registry) -> int:
    script = containerd_nodes.deployed_script(base / "prefetch.sh")
    hosts = base / "certs.d"
    containerd_nodes.hosts_entry(hosts, registry.host, registry.host)
    four = [push(base, registry, f"img{i}", IMAGE_MIB, i) for i in range(4)]
    single = push(base, registry, "single", SINGLE_MIB, 99)

    def agent(containerd: containerd_nodes.Containerd, items: list[str], parallelism: int) -> Report:
        done = containerd_nodes.run_agent(
            script, containerd, {"Images": ",".join(items), "Parallelism": str(parallelism)}, hosts_dir=hosts
        )
        if done.response_code != 0:
            raise RuntimeError(done.stderr)
        return done

    serial, parallel, present, present_line, with_agent, bare = [], [], [], [], [], []
    for _ in range(RUNS):
        for parallelism, into in ((1, serial), (4, parallel)):
            containerd = fresh_containerd()
            try:
                into.append(timed(lambda c=containerd, p=parallelism: agent(c, four, p)))
                # The same four again: all present now
                if parallelism == 4:
                    again = agent(containerd, four[:1], 1)
                    present.append((again.finished_at - again.started_at).total_seconds())
                    present_line.append(json.loads(again.stdout)["seconds"])
            finally:
                dispose(containerd)
        name = single.split("@")[0].rsplit(":", 1)[0] + "@" + single.split("@")[1]
        for side in ("agent", "ctr"):
            containerd = fresh_containerd()
            try:
                if side == "agent":
                    with_agent.append(timed(lambda c=containerd: agent(c, [single], 1)))
                else:
                    bare.append(
                        timed(lambda c=containerd, n=name: c.ctr("images", "pull", "--hosts-dir", str(hosts), n))
                    )
            finally:
                dispose(containerd)

    figures = {
        "node_parallel_vs_serial_ratio": round(median(parallel) / median(serial), 3),
        "node_present_seconds": round(median(present), 3),
        "node_agent_vs_ctr_ratio": round(median(with_agent) / median(bare), 3),
    }
    details: dict[str, Any] = {
        "runs": RUNS,
        "four_images_mib_each": IMAGE_MIB,
        "serial_seconds": [round(v, 3) for v in serial],
        "parallel_seconds": [round(v, 3) for v in parallel],
        "present_run_seconds": [round(v, 3) for v in present],
        "present_result_line_seconds": present_line,
        "single_image_mib": SINGLE_MIB,
        "agent_seconds": [round(v, 3) for v in with_agent],
        "bare_ctr_seconds": [round(v, 3) for v in bare],
    }
    save("node", figures, details)
    print(json.dumps({**figures, **details}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
