"""`make demo` end to end (devtools/local_stack/demo.py), on its own local stack: the push, the
late node, then the healing of issue 12 (the image removed behind the tool's back, found `evicted`
by a fleet check, pulled again by the next one's catch-up) and the IAM summary with nothing
denied; it ends with `prefetcher wait` and the rollout events a pipeline's queue received.
Simulated pulls here; with real pulls (root, containerd) in the node variant."""

from __future__ import annotations

import os
import re

import pytest

from devtools.local_stack import containerd_nodes
from devtools.local_stack.demo import run_demo


def sections(out: str) -> list[tuple[str, str]]:
    """(header, body) of each `==> header` section, in order."""
    parts = re.split(r"^==> (.*)$", out, flags=re.MULTILINE)
    return list(zip(parts[1::2], parts[2::2], strict=True))


def check_the_healing(out: str) -> None:
    shown = sections(out)
    headers = [header for header, _ in shown]
    removed = next(i for i, h in enumerate(headers) if "behind the tool's back" in h)
    # The image was removed on the node that joined, then a fleet check found it evicted
    joined = re.search(r"removed on (i-[0-9a-f]+)", headers[removed]).group(1)
    assert headers[removed + 1].startswith("fleet check")
    assert "record is now evicted" in shown[removed + 1][1]
    assert headers[removed + 2] == f"prefetcher node {joined}"
    assert re.search(r"^ml/trainer@\S+\s+v1\.4\.0\s+evicted\s", shown[removed + 2][1], flags=re.MULTILINE)
    # The next fleet check's catch-up pulled it again: coverage is back to 100 % everywhere
    assert headers[removed + 3].startswith("the next fleet check")
    assert "record is now cached" in shown[removed + 3][1]
    assert headers[removed + 4] == "prefetcher coverage"
    rows = [line for line in shown[removed + 4][1].splitlines() if line.startswith("ml-") and "ml/trainer" in line]
    assert len(rows) == 2 and all("100.0%" in row and " evicted " not in row for row in rows)
    # And every function's calls, FleetCheckFunction's too, were allowed by its role
    iam_header, iam_body = shown[removed + 5]
    assert iam_header.startswith("IAM")
    assert "FleetCheckFunction" in iam_body
    assert all(line.endswith(" 0 denied") for line in iam_body.strip().splitlines())


def check_the_end(out: str) -> None:
    """The demo ends as a pipeline would: `prefetcher wait` on the demo image exits 0, then the
    rollout events its queue received through a rule with the documented pattern."""
    (wait_header, wait_body), (events_header, events_body) = sections(out)[-3:-1]
    assert wait_header.startswith("prefetcher wait ml/trainer:v1.4.0@sha256:")
    lines = wait_body.strip().splitlines()
    assert re.fullmatch(r"\S+Z warm: ml/trainer@sha256:\w+ is held by 100% or more of the live nodes "
                        r"\(ml-batch 2/2, ml-prod 4/4\)", lines[-2])  # fmt: skip
    assert lines[-1].strip() == "exit code 0 (reached): the pipeline deploys now"
    assert events_header.startswith("the rollout events the pipeline's queue received")
    received = re.findall(r"^    Image Prefetch Rollout Completed \(eks-image-prefetcher\)", events_body, re.MULTILINE)
    assert len(received) == 2  # one per push command: ml-batch and ml-prod, each once


@pytest.mark.slow
def test_the_demo_shows_an_evicted_image_found_and_pulled_again_with_simulated_pulls(tmp_path, capsys):
    assert run_demo("no", log_path=tmp_path / "functions.log") == 0
    out = capsys.readouterr().out
    assert "no longer holds ml/trainer@sha256:" in out
    check_the_healing(out)
    check_the_end(out)


@pytest.mark.slow
@pytest.mark.node
def test_the_demo_removes_the_image_from_the_nodes_containerd_and_pulls_it_again(tmp_path, capsys):
    problem = containerd_nodes.unavailable()
    if problem:
        if os.environ.get("PREFETCH_NODE_SUITE") == "required":  # CI: a missing piece fails, as in tests/node
            pytest.fail(f"real pulls required but not possible here: {problem}")
        pytest.skip(f"real pulls need root with containerd, docker-registry and skopeo: {problem}")
    assert run_demo("yes", log_path=tmp_path / "functions.log") == 0
    out = capsys.readouterr().out
    assert "ctr -n k8s.io images rm 123456789012.dkr.ecr.us-east-1.amazonaws.com/ml/trainer:v1.4.0" in out
    check_the_healing(out)
    check_the_end(out)
