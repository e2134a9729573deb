"""The SSM document: its script is agent/prefetch.sh byte for byte, its parameters are all
validated and reach the script only as environment variables, and its patterns are the ones the
Python side uses."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from prefetcher import refs

from devtools.local_stack import ssm_agent
from devtools.local_stack.template_resolver import load
from tests.helpers import ROOT

SCRIPT = (ROOT / "agent" / "prefetch.sh").read_text()


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    content: dict[str, Any] = load()["Resources"]["PrefetchDocument"]["Properties"]["Content"]
    return content


def test_the_deployed_script_is_agent_prefetch_sh_byte_for_byte(document):
    (step,) = document["mainSteps"]
    assert step["inputs"]["runCommand"] == [SCRIPT]


def test_render_check_passes_on_the_committed_template():
    import subprocess
    import sys

    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "render_document.py"), "--check"], check=False)
    assert result.returncode == 0


def test_every_parameter_has_an_allowed_pattern_and_env_var_interpolation(document):
    for name, spec in document["parameters"].items():
        assert spec.get("allowedPattern"), name
        if "default" in spec:
            assert ssm_agent.go_compile(spec["allowedPattern"]).search(spec["default"]), name
        if name == "executionTimeout":
            continue
        assert spec.get("interpolationType") == "ENV_VAR", name


def test_execution_timeout_feeds_only_the_step_timeout_and_is_digits_only(document):
    # With ENV_VAR, SSM agents write "$SSM_executionTimeout" into timeoutSeconds (the step then
    # runs with the 3600 s default): this one parameter is interpolated as text, so it must be
    # digits only and must not appear in the script.
    spec = document["parameters"]["executionTimeout"]
    assert "interpolationType" not in spec
    assert re.fullmatch(r"\^[()\[\]0-9|{},-]+\$", spec["allowedPattern"])
    assert "executionTimeout" not in SCRIPT
    for hostile in ("60;reboot", "$(id)", "1e9", "-1", "172801", "`id`"):
        assert not re.search(spec["allowedPattern"], hostile)


def test_the_script_never_interpolates_parameters_as_text():
    assert "{{" not in SCRIPT and "}}" not in SCRIPT


def test_the_images_pattern_is_the_one_the_functions_use(document):
    assert document["parameters"]["Images"]["allowedPattern"] == refs.IMAGES_PARAMETER


def test_every_pattern_compiles_as_the_ssm_agent_compiles_it(document):
    # Given the document's patterns, when each node's SSM agent compiles them with Go's regexp
    # (RE2: no counted repeat above 1000, alone or nested; no lookaround, no backreference),
    # then each compiles: a pattern that does not fails every invocation on every node.
    for spec in document["parameters"].values():
        ssm_agent.go_compile(spec["allowedPattern"])  # raises ValueError with RE2's reason
    for pattern in (refs.REGISTRY, refs.REPOSITORY, refs.TAG, refs.DIGEST, refs.IMAGE_ITEM):
        ssm_agent.go_compile(pattern)


_names = st.from_regex(r"[a-z0-9]{1,8}([._-][a-z0-9]{1,8}){0,3}", fullmatch=True)
_items = st.builds(
    lambda registry, repository, tag, digest: f"{registry}/{repository}{tag}@sha256:{digest}",
    st.sampled_from(["123456789012.dkr.ecr.us-east-1.amazonaws.com", "localhost:5000", "r.example"]),
    st.lists(_names, min_size=1, max_size=3).map("/".join),
    st.sampled_from(["", ":v1", ":v1.4.0-rc_1"]),
    st.text(alphabet="0123456789abcdef", min_size=64, max_size=64),
)
_noise = st.sampled_from(["", "A", "\n", " ", ";id", "$(id)", ",", "..", "sha256:", ":", "@", "é", "/"])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_items, _noise, st.integers(min_value=0, max_value=200)), min_size=1, max_size=5))
@example(parts=[(f"r.example/ml/app@sha256:{'0' * 64}", "\n", 200)])  # a final newline: Python's `$` takes it
@example(parts=[(f"r.example/ml/app@sha256:{'0' * 64}", "", 0)])
def test_the_agent_and_the_senders_agree_on_every_images_value(parts):
    # Given an Images value (valid items, some spoilt at a random place)
    items = [item[:at] + noise + item[at:] for item, noise, at in parts]
    value = ",".join(items)
    # When the SSM agent's check (RE2) and the functions' own parsing read it
    agent = ssm_agent.go_compile(refs.IMAGES_PARAMETER).search(value) is not None
    python = re.search(refs.IMAGES_PARAMETER, value) is not None
    try:
        refs.parse_images_parameter(value)
        senders = True
    except ValueError:
        senders = False
    # Then Go's regexp and Python's read the pattern the same way, but for one thing: `$` also
    # matches before a final newline in Python (and in Java, which the SSM service checks with),
    # not in Go. The senders never put one there, and they accept exactly what the pattern accepts
    # within the bounds a RE2 pattern cannot carry (lengths, 50 images).
    if value.endswith("\n") and python:
        assert not agent and not senders, value
        return
    assert agent == python, value
    assert senders == (agent and within_bounds(value)), value


def within_bounds(value: str) -> bool:
    items = value.split(",")
    if len(value) > refs.IMAGES_MAX_LENGTH or len(items) > refs.MAX_IMAGES_PER_COMMAND:
        return False
    for item in items:
        registry, _, rest = item.rpartition("@")[0].partition("/")
        repository = rest.rsplit(":", 1)[0] if ":" in rest else rest
        if len(registry) > 255 or not 2 <= len(repository) <= refs.REPOSITORY_MAX:
            return False
    return True


def test_the_agent_validates_with_the_same_patterns():
    shell = dict(re.findall(r"^readonly (\w+_RE)='([^']*)'$", SCRIPT, flags=re.MULTILINE))
    assert shell == {
        "REGISTRY_RE": refs.REGISTRY,
        "REPOSITORY_RE": refs.REPOSITORY,
        "TAG_RE": refs.TAG,
        "DIGEST_RE": refs.DIGEST,
    }


def test_the_step_runs_only_on_linux_within_the_execution_timeout(document):
    (step,) = document["mainSteps"]
    assert step["action"] == "aws:runShellScript"
    assert step["precondition"] == {"StringEquals": ["platformType", "Linux"]}
    assert step["inputs"]["timeoutSeconds"] == "{{ executionTimeout }}"


def test_allowed_values_and_allowed_patterns_accept_exactly_the_same_values(document):
    # Given a parameter with allowedValues (checked by the SSM service) and an allowedPattern (the
    # one each node's SSM agent checks, with Go's regexp), then both accept exactly the declared
    # values, the default among them, and nothing that merely contains one
    with_values = {name: spec for name, spec in document["parameters"].items() if "allowedValues" in spec}
    assert set(with_values) >= {"Mode", "PinImages"}
    for name, spec in with_values.items():
        pattern = ssm_agent.go_compile(spec["allowedPattern"])
        assert spec["default"] in spec["allowedValues"], name
        for value in spec["allowedValues"]:
            assert pattern.search(value), (name, value)
            for spoilt in (value.upper(), f"{value};id", f"x{value}", f"{value}\n", f"{value},{value}", ""):
                assert not pattern.search(spoilt) and spoilt not in spec["allowedValues"], (name, spoilt)


def test_mode_and_pin_images_are_declared_as_the_agent_reads_them(document):
    parameters = document["parameters"]
    assert (parameters["Mode"]["allowedValues"], parameters["Mode"]["default"]) == (["pull", "inventory"], "pull")
    assert (parameters["PinImages"]["allowedValues"], parameters["PinImages"]["default"]) == (["true", "false"], "true")
    assert "mode=${SSM_Mode-pull}" in SCRIPT and "pin_images=${SSM_PinImages-true}" in SCRIPT
