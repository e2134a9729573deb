"""The wheel that pyproject.toml builds, as an operator installs it: without the dev extra, in a
fresh venv. It holds the layer package and the operator CLI, not the local stack (devtools/);
`prefetcher --help` and `prefetcher status` work against the local stack, and `prefetcher local`
says what to install instead of failing with a traceback."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from devtools.local_stack.ec2_fleet import NodeSpec, launch
from tests.helpers import ROOT, load_event

pytestmark = pytest.mark.slow

SOURCES = ("pyproject.toml", "README.md", "layers", "cli", "devtools")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built from a copy of the sources (devtools/ included, as in a clone), so that
    the build leaves nothing in the working tree."""
    base = tmp_path_factory.mktemp("wheel")
    source = base / "source"
    source.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(ROOT / name, source / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check", "--no-deps",
         "-w", str(base / "dist"), str(source)],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    (built,) = (base / "dist").glob("eks_image_prefetcher-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path) -> Path:
    """A fresh venv with the wheel and its dependencies (from the package index), no dev extra;
    returns its bin directory."""
    target = wheel.parent.parent / "venv"
    venv.create(target, with_pip=True)
    subprocess.run(
        [str(target / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", str(wheel)],
        check=True, capture_output=True, timeout=900,
    )  # fmt: skip
    return target / "bin"


def run(bin_dir: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`prefetcher <args>` from the installed wheel, outside any clone of the repository."""
    return subprocess.run(
        [str(bin_dir / "prefetcher"), *args],
        capture_output=True, text=True, check=False, timeout=300, cwd=bin_dir.parent,
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root"), **(env or {})},
    )  # fmt: skip


def test_the_wheel_holds_the_layer_and_the_cli_but_not_the_local_stack(wheel):
    # Given the wheel built from pyproject.toml, from sources that include devtools/
    # When its files are listed
    names = zipfile.ZipFile(wheel).namelist()
    # Then it has the layer package and the CLI, and nothing of the development tools
    assert "prefetcher/store/table.py" in names
    assert "prefetcher_cli/main.py" in names
    assert not [n for n in names if n.startswith(("devtools/", "tests/", "bench/"))]


def test_the_installed_cli_shows_its_help(installed):
    # Given the wheel installed in a fresh venv without the dev extra
    # When `prefetcher --help` runs
    result = run(installed, "--help")
    # Then it lists the operator commands
    assert result.returncode == 0, result.stderr
    for command in ("status", "node", "coverage", "failures", "redrive"):
        assert command in result.stdout


def test_the_installed_cli_reads_the_status_of_a_push_from_the_local_stack(installed, stack):
    # Given a push to the target clusters, recorded in the local stack's audit table
    launch(stack.client("ec2"), NodeSpec("ml-prod", "managed", "general"), 1)
    push = load_event("ecr-push-tagged.json")
    assert stack.functions["ImagePushFunction"].invoke(push)["action"] == "sent"
    # When the installed `prefetcher status` asks about the image, pointed at the local stack
    result = run(
        installed, "status", "ml/trainer:v1.4.0", "--table", stack.output("AuditTable"), "--output", "json",
        env=stack.servers.environment(),
    )  # fmt: skip
    # Then it answers with the pushed digest, as the CLI in the clone does
    assert result.returncode == 0, result.stderr
    assert push["detail"]["image-digest"] in result.stdout


def test_the_installed_cli_says_what_to_do_for_the_local_stack_and_exits_non_zero(installed):
    # Given the wheel installed outside any clone, without the dev extra
    # When `prefetcher local demo` runs
    result = run(installed, "local", "demo")
    # Then it says to clone the repository and run make install and make demo, without a traceback
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "clone the repository" in result.stderr
    assert "make install" in result.stderr and "make demo" in result.stderr
