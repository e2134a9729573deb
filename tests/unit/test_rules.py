"""Which pushes are prefetched, and the logged reason for every one that is not."""

from __future__ import annotations

import pytest
from prefetcher.events import EcrImageActionEvent
from prefetcher.rules import Ignore, Prefetch, PushRules

from tests.helpers import load_event

RULES = PushRules(repository_patterns=("ml/*", "tools"), tag_patterns=("v*", "latest"), clusters=("a", "b"))


def detail(**changes: str):
    event = load_event("ecr-push-tagged.json")
    event["detail"].update(changes)
    return EcrImageActionEvent.model_validate(event).detail


def test_a_matching_tagged_push_goes_to_every_target_cluster():
    assert RULES.decide(detail()) == Prefetch(clusters=("a", "b"))


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"action-type": "DELETE"}, "action-type is DELETE"),
        ({"result": "FAILURE"}, "result is FAILURE"),
        ({"image-tag": ""}, "no tag"),
        ({"repository-name": "web/frontend"}, "matches none of RepositoryPatterns ml/*,tools"),
        ({"image-tag": "nightly"}, "matches none of TagPatterns v*,latest"),
    ],
)
def test_pushes_that_are_not_ours_are_ignored_with_a_reason(changes, reason):
    decision = RULES.decide(detail(**changes))
    assert isinstance(decision, Ignore)
    assert reason in decision.reason


def test_the_sample_untagged_child_manifest_is_ignored():
    event = EcrImageActionEvent.model_validate(load_event("ecr-push-untagged-child.json"))
    assert isinstance(RULES.decide(event.detail), Ignore)


def test_the_sample_delete_is_ignored():
    event = EcrImageActionEvent.model_validate(load_event("ecr-delete.json"))
    assert "DELETE" in RULES.decide(event.detail).reason  # type: ignore[union-attr]
