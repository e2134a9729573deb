"""The SSM document: its script is agent/prefetch.sh byte for byte, its parameters are all
validated and reach the script only as environment variables, and its patterns are the ones the
Python side uses."""

from __future__ import annotations

import re
from typing import Any

import pytest
from prefetcher import refs
from prefetcher_cli.local.template import load

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
            assert re.search(spec["allowedPattern"], spec["default"]), name
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
