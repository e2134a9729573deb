"""Exactly one SendCommand per send, whatever fails around it (prefetcher.send_once)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime

import pytest
from botocore.exceptions import ReadTimeoutError
from prefetcher import clients, send_once
from prefetcher.eks_tags import cluster_targets
from prefetcher.refs import ImageRef
from prefetcher.settings import AgentSettings
from prefetcher.store import AuditTable

from devtools.local_stack.ec2_fleet import NodeSpec, launch
from tests.helpers import load_event, moto_commands

IMAGE = ImageRef("123456789012.dkr.ecr.us-east-1.amazonaws.com", "ml/trainer", "sha256:" + "c" * 64, "v1")


@pytest.fixture
def ready(stack):
    launch(stack.client("ec2"), NodeSpec("ml-prod", "managed", "general"), 2)
    agent = AgentSettings.model_validate({"DOCUMENT_NAME": stack.output("PrefetchDocument")})
    return AuditTable(stack.output("AuditTable")), agent, cluster_targets("ml-prod")[0]


def test_a_second_try_after_a_crash_between_send_and_record_finds_the_command(ready):
    table, agent, target = ready
    # Given a try that claimed the send and sent it, then died before storing the command id
    tag = send_once.marker("push#e1#ml-prod")
    table.commands.claim_send("push#e1#ml-prod", datetime.now(UTC))
    from prefetcher import ssm

    first, _ = ssm.send_pull([IMAGE], agent, f"{tag} push", target=target)
    # When the event is tried again
    again, _ = send_once.send_once(table, "push#e1#ml-prod", [IMAGE], agent, "push", target=target)
    # Then it finds that command instead of sending a second one
    assert again == first
    assert len(moto_commands()) == 1


def test_a_lost_answer_to_a_send_that_happened_is_not_sent_again(ready):
    table, agent, target = ready
    # Given SendCommand reaches SSM, but its answer is lost (a read timeout after the call)
    calls = {"n": 0}

    def lose_answer(**kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise ReadTimeoutError(endpoint_url="https://ssm.us-east-1.amazonaws.com")

    clients.client("ssm", attempts=1).meta.events.register("after-call.ssm.SendCommand", lose_answer)
    # When the command is sent once
    command_id, _ = send_once.send_once(table, "push#e2#ml-prod", [IMAGE], agent, "push", target=target)
    # Then SendCommand was called once, and the command found by its marker is the one SSM holds
    assert calls["n"] == 1
    assert [c.command_id for c in moto_commands()] == [command_id]


def test_a_completed_send_is_never_repeated(ready):
    table, agent, target = ready
    # Given a send that completed (claimed, sent, its command id stored)
    first = send_once.send_once(table, "push#e3#ml-prod", [IMAGE], agent, "push", target=target)
    # When the same send is made again
    again = send_once.send_once(table, "push#e3#ml-prod", [IMAGE], agent, "push", target=target)
    # Then it answers the stored command and SSM holds one command
    assert first[0] == again[0]
    assert len(moto_commands()) == 1


def test_a_push_retried_after_failing_between_clusters_sends_each_cluster_once(stack, monkeypatch):
    from prefetcher.store.commands import Commands

    # Given a push to two clusters whose first try dies after sending to ml-prod, before
    # recording ml-batch's command
    launch(stack.client("ec2"), NodeSpec("ml-batch", "managed", "general"))
    original = Commands.record
    failed = {"done": False}

    def fail_once(self, command):
        if command.cluster == "ml-batch" and not failed["done"]:
            failed["done"] = True
            raise RuntimeError("the function timed out here")
        return original(self, command)

    monkeypatch.setattr(Commands, "record", fail_once)
    push = copy.deepcopy(load_event("ecr-push-tagged.json"))
    with pytest.raises(RuntimeError):
        stack.functions["ImagePushFunction"].invoke(push)
    # When the push is tried again
    result = stack.functions["ImagePushFunction"].invoke(push)
    # Then each cluster got exactly one command
    assert result["action"] == "sent"
    clusters = sorted(c.targets[0]["Key"].rsplit("/", 1)[1] for c in moto_commands())
    assert clusters == ["ml-batch", "ml-prod"]


def test_a_document_and_parameters_above_64_kb_are_refused_as_ssm_refuses_them(stack):
    import json

    import yaml
    from prefetcher import ssm
    from prefetcher.errors import ConfigurationError

    from devtools.local_stack import moto_patches
    from devtools.local_stack.template_resolver import load

    # Given a document that is ours but 63 KB (a bloated script) and a command for 20 images
    content = load()["Resources"]["PrefetchDocument"]["Properties"]["Content"]
    big = {**content, "description": "x" * (63 * 1024 - len(json.dumps(content, separators=(",", ":"))))}
    stack.client("ssm").create_document(Name="big-prefetch", Content=yaml.safe_dump(big), DocumentType="Command",
                                        DocumentFormat="YAML")  # fmt: skip
    moto_patches.register_document("big-prefetch", big)
    (node,) = launch(stack.client("ec2"), NodeSpec("ml-prod", "managed", "general"))
    agent = AgentSettings.model_validate({"DOCUMENT_NAME": "big-prefetch"})
    images = [ImageRef(IMAGE.registry, f"ml/model-{n:02d}", "sha256:" + f"{n:02d}" * 32, "v1") for n in range(20)]
    # When it is sent, SSM refuses it (MaxDocumentSizeExceeded), and the sender says why, at once
    with pytest.raises(ConfigurationError, match="MaxDocumentSizeExceeded"):
        ssm.send_pull(images, agent, "too big", instance_ids=[node])
    assert moto_commands() == []
