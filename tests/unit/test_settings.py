"""Each function's environment is validated once, with a message that names every problem."""

from __future__ import annotations

import pytest
from prefetcher.errors import ConfigurationError
from prefetcher.settings import AuditSettings, ImagePushSettings

BASE = {"TABLE_NAME": "audit", "DOCUMENT_NAME": "doc", "TARGET_CLUSTERS": "ml-prod, ml-batch"}


def test_defaults_and_comma_lists():
    settings = ImagePushSettings.from_environ(BASE)
    assert settings.selection.target_clusters == ("ml-prod", "ml-batch")
    assert settings.selection.target_node_groups == ()
    assert settings.repository_patterns == ("*",)
    assert settings.agent.max_errors == "10%"
    assert settings.agent.document_name == "doc"


def test_every_problem_is_named_at_once():
    env = {**BASE, "TARGET_CLUSTERS": "ok,bad;name", "MAX_CONCURRENCY": "0", "PULL_PARALLELISM": "99"}
    del env["DOCUMENT_NAME"]
    with pytest.raises(ConfigurationError) as raised:
        ImagePushSettings.from_environ(env)
    message = str(raised.value)
    for name in ("TARGET_CLUSTERS", "MAX_CONCURRENCY", "PULL_PARALLELISM", "DOCUMENT_NAME"):
        assert name in message


def test_no_clusters_is_a_configuration_error():
    with pytest.raises(ConfigurationError, match="TARGET_CLUSTERS"):
        ImagePushSettings.from_environ({**BASE, "TARGET_CLUSTERS": " , "})


def test_audit_settings_need_the_table_and_document():
    assert AuditSettings.from_environ(BASE).document_name == "doc"
    with pytest.raises(ConfigurationError, match="TABLE_NAME"):
        AuditSettings.from_environ({"DOCUMENT_NAME": "doc"})
