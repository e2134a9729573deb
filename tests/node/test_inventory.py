"""The node agent's inventory mode and its CRI pins, exactly as the SSM document deploys it,
against a real containerd and a real registry (issue 12, the node side)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import pytest
from prefetcher import commands, refs
from pydantic import BaseModel, ConfigDict, Field

from devtools.local_stack import containerd_nodes, oci_images, ssm_agent
from devtools.local_stack.template_resolver import load
from tests.node.conftest import Pushed
from tests.node.test_agent import CANARY, fatal_reason, item

pytestmark = pytest.mark.node  # a real containerd and registry (needs root)

PIN = "io.cri-containerd.pinned=pinned"
OWN_PIN = "eks-image-prefetcher/pinned=true"


class Line(BaseModel):
    """A result line with the `pinned` field, as the audit will read it (no other field)."""

    model_config = ConfigDict(extra="forbid")

    image: str
    digest: str
    tag: str
    outcome: Literal["pulled", "present", "skipped-disk", "failed", "absent"]
    bytes: int = Field(ge=0)
    seconds: float = Field(ge=0)
    error: str
    pinned: bool


class Disk(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str
    free_bytes: int = Field(ge=0)
    total_bytes: int = Field(ge=0)
    more: int = Field(ge=0)


def parsed(stdout: str) -> tuple[list[Line], Disk | None]:
    """Every stdout line is a result line, but for one disk line, the last."""
    lines = [json.loads(raw) for raw in stdout.splitlines()]
    disk = Disk.model_validate(lines.pop()["disk"]) if lines and "disk" in lines[-1] else None
    return [Line.model_validate(line) for line in lines], disk


@pytest.fixture
def agent(script: Path, containerd: containerd_nodes.Containerd, hosts_dir: Path) -> Any:
    def run_agent(images: list[str], **parameters: str) -> tuple[ssm_agent.Report, list[Line], Disk | None]:
        params = {"Images": ",".join(images), **parameters}
        outcome = containerd_nodes.run_agent(script, containerd, params, hosts_dir=hosts_dir)
        lines, disk = parsed(outcome.stdout)
        return outcome, lines, disk

    return run_agent


def labels(containerd: containerd_nodes.Containerd, name: str) -> str:
    return containerd.images()[name]["labels"]


def config_size(containerd: containerd_nodes.Containerd, image: Pushed) -> int:
    manifest = json.loads(containerd.ctr("content", "get", image.digest).stdout)
    return int(manifest["config"]["size"])


def test_inventory_finds_an_image_removed_behind_the_agents_back_absent_and_another_present(
    agent, registry, pushed, containerd
):
    # Given two current images the agent pulled (and pinned)
    small, other = pushed["small"], pushed["other"]
    current = [item(registry, small), item(registry, other)]
    outcome, _, _ = agent(current)
    assert outcome.response_code == 0, outcome.stderr
    # When one is removed behind the agent's back under every name, as the kubelet's image GC would
    names = [name for name, found in containerd.images().items() if found["digest"] == small.digest]
    assert f"{registry.host}/ml/small:v1" in names
    containerd.ctr("images", "rm", "--sync", *names)
    # and the inventory runs
    outcome, lines, disk = agent(current, Mode="inventory")
    # Then one line per image says which is here, with its size and pin, then the disk
    assert outcome.response_code == 0, outcome.stderr
    by_image = {line.image: line for line in lines}
    assert set(by_image) == {f"{registry.host}/ml/small@{small.digest}", f"{registry.host}/ml/other@{other.digest}"}
    gone = by_image[f"{registry.host}/ml/small@{small.digest}"]
    here = by_image[f"{registry.host}/ml/other@{other.digest}"]
    assert (gone.outcome, gone.bytes, gone.pinned, gone.tag) == ("absent", 0, False, "v1")
    assert (here.outcome, here.pinned, here.tag, here.seconds, here.error) == ("present", True, "v1", 0, "")
    assert here.bytes == other.size + config_size(containerd, other)
    assert disk is not None and disk.path == str(containerd.root) and disk.more == 0
    assert 0 < disk.free_bytes <= disk.total_bytes
    # And nothing was pulled
    assert f"{registry.host}/ml/small@{small.digest}" not in containerd.images()


def test_inventory_also_reports_the_images_it_delivered_that_are_no_longer_current(agent, registry, pushed, containerd):
    # Given the agent delivered an image that the cluster no longer names
    small, other = pushed["small"], pushed["other"]
    agent([item(registry, small)])
    # When the inventory is given only the current one
    _, lines, _ = agent([item(registry, other)], Mode="inventory")
    # Then the delivered one has its line too (present, with the tag that names it)
    by_image = {line.image: line for line in lines}
    assert by_image[f"{registry.host}/ml/small@{small.digest}"].outcome == "present"
    assert by_image[f"{registry.host}/ml/small@{small.digest}"].tag == "v1"
    assert by_image[f"{registry.host}/ml/other@{other.digest}"].outcome == "absent"


def test_a_pulled_current_image_is_pinned_with_the_agents_own_label(agent, registry, pushed, containerd):
    # Given a current image, when the agent pulls it
    small = pushed["small"]
    outcome, (line,), _ = agent([item(registry, small)])
    # Then its digest name carries the CRI pin and the agent's mark that the pin is its own
    assert line.outcome == "pulled" and line.pinned is True, outcome.stderr
    assert outcome.stdout.rstrip("\n").endswith(',"error":"","pinned":true}')
    found = labels(containerd, f"{registry.host}/ml/small@{small.digest}")
    assert PIN in found and OWN_PIN in found and "eks-image-prefetcher/delivered=20" in found
    # And when it is found present in a later run, the pin is reported as it is
    outcome, (line,), _ = agent([item(registry, small)])
    assert (line.outcome, line.pinned) == ("present", True)


def test_pulling_a_newer_digest_for_the_tag_unpins_the_older_one(agent, registry, pushed, containerd, node_base):
    host = registry.host
    for name in ("par0", "par1"):
        oci_images.push(node_base / "layouts" / name, f"{host}/ml/pinapp:{name}")
    old, new = pushed["par0"].digest, pushed["par1"].digest
    # Given ml/pinapp:v1 was pulled (and pinned) at one digest
    agent([f"{host}/ml/pinapp:v1@{old}"])
    assert PIN in labels(containerd, f"{host}/ml/pinapp@{old}")
    # When the tag moves to a newer digest and the agent pulls it
    outcome, (line,), _ = agent([f"{host}/ml/pinapp:v1@{new}"])
    assert line.outcome == "pulled" and line.pinned, outcome.stderr
    # Then the older digest has neither the pin nor the agent's mark; the newer one has both
    found = containerd.images()
    assert PIN not in found[f"{host}/ml/pinapp@{old}"]["labels"]
    assert OWN_PIN not in found[f"{host}/ml/pinapp@{old}"]["labels"]
    assert PIN in found[f"{host}/ml/pinapp@{new}"]["labels"]
    assert "superseded" in outcome.stderr


def test_inventory_unpins_the_agents_pins_on_digests_that_are_no_longer_current(
    agent, registry, pushed, containerd, node_base
):
    host = registry.host
    for name in ("par2", "par3"):
        oci_images.push(node_base / "layouts" / name, f"{host}/ml/stale:{name}")
    a, b = pushed["par2"].digest, pushed["par3"].digest
    # Given two digests of one repository, both pulled and pinned under different tags
    agent([f"{host}/ml/stale:one@{a}", f"{host}/ml/stale:two@{b}"])
    # When the inventory is told only one of them is current
    _, lines, _ = agent([f"{host}/ml/stale:two@{b}"], Mode="inventory")
    # Then the other loses the agent's pin (it is still reported, as present and not pinned)
    found = containerd.images()
    assert PIN not in found[f"{host}/ml/stale@{a}"]["labels"] and PIN in found[f"{host}/ml/stale@{b}"]["labels"]
    by_image = {line.image: line for line in lines}
    assert (by_image[f"{host}/ml/stale@{a}"].outcome, by_image[f"{host}/ml/stale@{a}"].pinned) == ("present", False)
    assert by_image[f"{host}/ml/stale@{b}"].pinned is True


def test_a_foreign_pin_is_left_alone_by_both_modes(agent, registry, pushed, containerd, hosts_dir, node_base):
    host = registry.host
    for name in ("par0", "par1"):
        oci_images.push(node_base / "layouts" / name, f"{host}/ml/sandbox:{name}")
    old, new = pushed["par0"].digest, pushed["par1"].digest
    foreign = f"{host}/ml/sandbox@{old}"
    # Given an image pinned by someone else (as containerd pins its sandbox image)
    containerd.ctr("images", "pull", "--hosts-dir", str(hosts_dir), foreign)
    containerd.ctr("images", "label", foreign, PIN)
    # When the agent delivers it, then its tag moves on and the agent pulls the newer digest
    outcome, (line,), _ = agent([f"{host}/ml/sandbox:v1@{old}"])
    assert (line.outcome, line.pinned) == ("present", True), outcome.stderr
    assert OWN_PIN not in labels(containerd, foreign)
    agent([f"{host}/ml/sandbox:v1@{new}"])
    # and inventories run that no longer name it, with pins on and off
    agent([f"{host}/ml/sandbox:v1@{new}"], Mode="inventory")
    _, lines, _ = agent([f"{host}/ml/sandbox:v1@{new}"], Mode="inventory", PinImages="false")
    # Then the foreign pin is still there; the agent's own pin on the newer digest went with PinImages=false
    assert PIN in labels(containerd, foreign)
    assert PIN not in labels(containerd, f"{host}/ml/sandbox@{new}")
    assert {line.image: line.pinned for line in lines}[foreign] is True


def test_with_pin_images_false_no_pin_is_set(agent, registry, pushed, containerd):
    small = pushed["small"]
    outcome, (line,), _ = agent([item(registry, small)], PinImages="false")
    assert (line.outcome, line.pinned) == ("pulled", False), outcome.stderr
    found = labels(containerd, f"{registry.host}/ml/small@{small.digest}")
    assert PIN not in found and OWN_PIN not in found
    assert "eks-image-prefetcher/delivered=" in found
    _, (line,), _ = agent([item(registry, small)], Mode="inventory", PinImages="false")
    assert (line.outcome, line.pinned) == ("present", False)


@pytest.mark.parametrize("value", ["Inventory", "inventory;id", "inventory\n", "", "pull,inventory", "$(id)"])
def test_an_invalid_mode_is_refused_by_the_document_and_by_the_script(script, containerd, registry, pushed, value):
    spec = load()["Resources"]["PrefetchDocument"]["Properties"]["Content"]["parameters"]
    good = item(registry, pushed["small"])
    for name in ("Mode", "PinImages"):
        # The SSM agent (RE2, as Go's regexp) and the service (allowedValues) refuse it
        with pytest.raises(ssm_agent.ParameterError):
            ssm_agent.validate(spec, {"Images": good, name: value})
        assert value not in spec[name]["allowedValues"]
        # and so does the script, should it get it anyway: nothing runs, nothing is pulled
        CANARY.unlink(missing_ok=True)
        outcome = containerd_nodes.run_agent(script, containerd, {"Images": good, name: value})
        assert outcome.response_code == 2 and fatal_reason(outcome.stdout).startswith(f"rejected: {name} must be")
        assert not CANARY.exists()
    assert containerd.images() == {}
    # While the declared values pass both
    assert ssm_agent.validate(spec, {"Images": good, "Mode": "inventory", "PinImages": "false"})["Mode"] == "inventory"


def worst_case_items(long_names: bool) -> list[str]:
    """The first command the senders would send of 50 absent images, with the longest names the
    bounds allow (fewer fit in a command) or short ones (50 fit)."""
    if long_names:
        registry, repository, tag = "r" * 200 + ".example:65535", "ml/" + "a" * 250, "t" * 128
    else:
        registry, repository, tag = "r.example", "ml/app", "v1"
    images = [
        refs.ImageRef.parse_agent_item(f"{registry}/{repository}{i:03d}:{tag}@sha256:{i:064x}") for i in range(50)
    ]
    return [image.agent_item for image in commands.split(images)[0]]


@pytest.mark.parametrize("long_names", [True, False], ids=["longest-names", "most-images"])
def test_the_inventory_worst_case_fits_the_output_cut_and_parses(agent, registry, pushed, containerd, long_names):
    # Given 50 more images the agent delivered, each under the longest name the bounds allow
    small = pushed["small"]
    agent([item(registry, small)])
    source = f"{registry.host}/ml/small@{small.digest}"
    extra = [f"{'e' * 200}.example/ml/{'x' * 248}{i:03d}@{small.digest}" for i in range(50)]
    for name in extra:
        containerd.ctr("images", "tag", source, name)
        containerd.ctr("images", "label", name, "eks-image-prefetcher/delivered=2026-01-01T00:00:00Z")
    # When the inventory runs with as many current images as the senders put in one command
    current = worst_case_items(long_names)
    outcome, lines, disk = agent(current, Mode="inventory")
    # Then the output is within what the SSM agent keeps and every line parses, the disk line last
    assert outcome.response_code == 0, outcome.stderr
    assert not outcome.stdout.endswith(ssm_agent.TRUNCATED) and len(outcome.stdout) <= 24_000
    assert disk is not None
    # And every image is either reported or counted: the current ones first, all of them
    assert [line.image for line in lines[: len(current)]] == [refs.ImageRef.parse_agent_item(i).pinned for i in current]
    assert len(lines) + disk.more == len(current) + len(extra) + 1
    assert disk.more > 0
