"""SsmAuditFunction's record handler answers from the batch it is given, not from module state:
called alone, or for two batches in a row, each answer is that batch's own."""

from __future__ import annotations

import importlib.util
from functools import partial
from types import ModuleType

import pytest
from aws_lambda_powertools.utilities.batch import process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from prefetcher import audit
from prefetcher.errors import CommandNotFoundError

from tests.helpers import ROOT

MESSAGE = {"messageId": "m-1", "receiptHandle": "r-1", "body": "{}", "attributes": {}, "eventSource": "aws:sqs"}


@pytest.fixture
def audit_function(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """functions/ssm_audit/app.py, loaded as Lambda loads it (settings from the environment)."""
    for name, value in {
        "TABLE_NAME": "audit-table",
        "DOCUMENT_NAME": "prefetch-document",
        "AWS_DEFAULT_REGION": "us-east-1",
        "POWERTOOLS_SERVICE_NAME": "test",
        "POWERTOOLS_METRICS_NAMESPACE": "test",
    }.items():
        monkeypatch.setenv(name, value)
    spec = importlib.util.spec_from_file_location("unit_ssm_audit_app", ROOT / "functions" / "ssm_audit" / "app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def two_batches() -> tuple[audit.BatchOutcome, audit.BatchOutcome]:
    """A message not applied in one batch (its command was not recorded yet) and applied when
    the queue delivered it again, in the next."""
    first = audit.BatchOutcome(errors={"m-1": CommandNotFoundError("command c-1 is not recorded (yet)")})
    second = audit.BatchOutcome(results={"m-1": audit.AuditResult(action="applied")})
    return first, second


def test_the_record_handler_answers_from_the_batch_it_is_given_not_the_last_one(audit_function):
    # Given the outcomes of two batches in a row that both hold the same message
    first, second = two_batches()
    record = SQSRecord(MESSAGE)
    # When the record handler reports the message for the second batch, then the first, then
    # the second again
    # Then each answer is that batch's own: applied, retried, applied
    assert audit_function.record_handler(record, second) == "applied"
    with pytest.raises(CommandNotFoundError):
        audit_function.record_handler(record, first)
    assert audit_function.record_handler(record, second) == "applied"


def test_two_batches_in_a_row_get_each_their_own_partial_batch_response(audit_function):
    # Given the outcomes of two batches in a row that both hold the same message
    first, second = two_batches()
    event = {"Records": [MESSAGE]}
    # When Powertools reports each batch with the record handler bound to that batch's outcome
    responses = [
        process_partial_response(
            event=event,
            record_handler=partial(audit_function.record_handler, outcome=outcome),
            processor=audit_function.processor,
        )
        for outcome in (first, second)
    ]
    # Then the first batch retries the message and the second does not
    assert [response["batchItemFailures"] for response in responses] == [[{"itemIdentifier": "m-1"}], []]
