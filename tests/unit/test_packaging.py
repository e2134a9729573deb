"""What ships in the layer is pinned, and pinned to what the tests run with."""

from __future__ import annotations

import re
import tomllib

from tests.helpers import ROOT


def pins(lines: list[str]) -> dict[str, str]:
    found = {}
    for line in lines:
        match = re.match(r"^\s*([A-Za-z0-9_.-]+)(\[[^\]]*\])?==([^\s;#]+)", line)
        if match:
            found[match.group(1).lower().replace("_", "-")] = match.group(3)
    return found


def test_every_layer_requirement_is_pinned_exactly():
    lines = [
        line
        for line in (ROOT / "layers/prefetcher/requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert len(pins(lines)) == len(lines)


def test_the_layer_and_the_project_pin_the_same_versions():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = pins(project["dependencies"] + project["optional-dependencies"]["dev"])
    layer = pins((ROOT / "layers/prefetcher/requirements.txt").read_text().splitlines())
    shared = set(declared) & set(layer)
    assert {"aws-lambda-powertools", "pydantic", "aws-xray-sdk"} <= shared
    assert {name: layer[name] for name in shared} == {name: declared[name] for name in shared}


def test_the_installed_versions_are_the_pinned_ones():
    from importlib.metadata import version

    layer = pins((ROOT / "layers/prefetcher/requirements.txt").read_text().splitlines())
    for name, pinned in layer.items():
        assert version(name) == pinned, name
