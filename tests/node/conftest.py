"""The node suite: the SSM document's script, byte for byte, against a real containerd and a
real registry. Needs root and Debian's containerd, docker-registry and skopeo; CI runs it as root
(.ci/run sets PREFETCH_NODE_SUITE=required, so a missing piece fails instead of skipping)."""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prefetcher.agent_output import ImageResult

from devtools.local_stack import containerd_nodes, oci_images, servers
from devtools.local_stack.ssm_agent import Report


def _requirement() -> None:
    problem = containerd_nodes.unavailable()
    if problem:
        if os.environ.get("PREFETCH_NODE_SUITE") == "required":
            pytest.fail(f"node suite required but not possible here: {problem}")
        pytest.skip(f"node suite needs root with containerd, docker-registry and skopeo: {problem}")


@pytest.fixture(scope="session")
def node_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _requirement()
    return tmp_path_factory.mktemp("node")


@pytest.fixture(scope="session")
def script(node_base: Path) -> Path:
    return containerd_nodes.deployed_script(node_base / "prefetch.sh")


@pytest.fixture(scope="session")
def registry(node_base: Path) -> Iterator[servers.Registry]:
    started = servers.Registry(node_base / "registry").start()
    yield started
    started.stop()


@dataclass(frozen=True)
class Pushed:
    repository: str
    digest: str
    size: int  # the node platform's layer bytes


def random_bytes(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


@pytest.fixture(scope="session")
def pushed(node_base: Path, registry: servers.Registry) -> dict[str, Pushed]:
    """Images in the registry: small ones, a multi-arch one, a big one, four for parallel pulls."""
    made = {}
    specs = {
        "small": ({"data": random_bytes(1, 512 * 1024)}, False),
        "other": ({"data": random_bytes(2, 256 * 1024)}, False),
        "multi": ({"data": random_bytes(3, 300 * 1024)}, True),
        "big": ({"data": random_bytes(4, 24 * 1024 * 1024)}, False),
        **{f"par{i}": ({"data": random_bytes(10 + i, 3 * 1024 * 1024)}, False) for i in range(4)},
    }
    for name, (files, multi) in specs.items():
        built = oci_images.build(node_base / "layouts" / name, files, multi_arch=multi)
        oci_images.push(node_base / "layouts" / name, f"{registry.host}/ml/{name}:v1")
        made[name] = Pushed(f"ml/{name}", built.digest, built.size)
    return made


@pytest.fixture
def containerd() -> Iterator[containerd_nodes.Containerd]:
    _requirement()
    # A fresh, short base path: a unix socket path must stay under 108 bytes.
    base = Path(tempfile.mkdtemp(prefix="ctd-", dir="/tmp"))
    started = containerd_nodes.Containerd(base).start()
    yield started
    started.stop()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def hosts_dir(tmp_path: Path, registry: servers.Registry) -> Path:
    directory = tmp_path / "certs.d"
    containerd_nodes.hosts_entry(directory, registry.host, registry.host)
    return directory


def results(stdout: str) -> list[ImageResult]:
    """Every stdout line is a result line of the contract."""
    return [ImageResult.model_validate(json.loads(line)) for line in stdout.splitlines()]


@pytest.fixture
def run(script: Path, containerd: containerd_nodes.Containerd, hosts_dir: Path) -> Any:
    def run_agent(images: list[str], **parameters: Any) -> tuple[Report, list[ImageResult]]:
        path = parameters.pop("path_prefix", None)
        hosts = parameters.pop("hosts", hosts_dir)
        params = {"Images": ",".join(images), **{k: str(v) for k, v in parameters.items()}}
        outcome = containerd_nodes.run_agent(script, containerd, params, hosts_dir=hosts, path_prefix=path)
        return outcome, results(outcome.stdout)

    return run_agent
