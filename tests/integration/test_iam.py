"""IAM on the local stack: every AWS call each function makes is authorised against its role in
the SAM-transformed template (devtools/local_stack/iam.py), as AWS authorises it. Each test
here failed on the template as it stood before the check existed, on the call that AWS refused
and the local stack let through."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from botocore.exceptions import ReadTimeoutError
from prefetcher.store import AuditTable

from devtools.local_stack import iam
from devtools.local_stack.aws_calls import hooked_clients
from devtools.local_stack.ec2_fleet import NodeSpec, launch
from devtools.local_stack.node_simulator import NodeSimulator, simulated_agent
from tests.helpers import CallCounter, load_event, moto_commands

PUSH = load_event("ecr-push-tagged.json")


def checked(function: str, start: int) -> list[iam.Call]:
    return [call for call in iam.calls[start:] if call.function == function]


def running(instance: str) -> dict:
    event = copy.deepcopy(load_event("ec2-running.json"))
    event["detail"]["instance-id"] = instance
    return event


def test_every_call_of_the_three_functions_is_authorised_by_its_own_role(stack):
    # Given nodes in a target cluster, one of which joins after the push
    ec2 = stack.client("ec2")
    launch(ec2, NodeSpec("ml-prod", "managed", "general"), 2)
    start = len(iam.calls)
    simulator = NodeSimulator(stack.put_events, "123456789012", "us-east-1", stack.output("PrefetchDocument"),
                              simulated_agent())  # fmt: skip
    # When a push, the nodes' results and a join go through the stack
    stack.put_events(PUSH)
    stack.run_sources(between=simulator.step)
    (joining,) = launch(ec2, NodeSpec("ml-prod", "karpenter", "gpu"))
    stack.put_events(running(joining))
    stack.run_sources(between=simulator.step)
    # Then each function's calls were checked against its role, and every one was allowed
    # (a denied one fails the test: tests/conftest.py)
    for function in ("ImagePushFunction", "SsmAuditFunction", "NodeJoinFunction"):
        calls = checked(function, start)
        assert calls, f"{function} made no checked call"
        assert all(call.allowed for call in calls), [c.describe() for c in calls if not c.allowed]
    actions = {(c.function, c.action) for c in iam.calls[start:]}
    assert ("SsmAuditFunction", "dynamodb:PartiQLInsert") in actions
    assert ("SsmAuditFunction", "dynamodb:PartiQLUpdate") in actions
    assert ("NodeJoinFunction", "ssm:SendCommand") in actions


def test_a_query_on_an_index_the_role_does_not_name_is_denied_as_aws_denies_it(stack):
    # Given the join function's role (Query on the table and on gsi1 only)
    function = stack.functions["NodeJoinFunction"]
    table = AuditTable(stack.output("AuditTable"))
    # When it queries gsi2 (the cluster's live nodes), as a join once did
    with iam.expect_denied("dynamodb:Query", "*index/gsi2"), iam.acting_as(function.principal):
        from botocore.exceptions import ClientError

        with pytest.raises(ClientError) as denied:
            table.queries.live_nodes("ml-prod")
    # Then AWS's answer comes back: AccessDeniedException, naming the index's ARN
    assert denied.value.response["Error"]["Code"] == "AccessDeniedException"
    assert f"table/{table.table_name}/index/gsi2" in denied.value.response["Error"]["Message"]


def test_a_join_reads_the_catalog_without_reading_the_clusters_live_nodes(stack):
    # Given a pushed image and a node joining
    stack.functions["ImagePushFunction"].invoke(copy.deepcopy(PUSH))
    (node,) = launch(stack.client("ec2"), NodeSpec("ml-prod", "managed", "general"))
    from devtools.local_stack.lambda_runtime import sqs_event

    start = len(iam.calls)
    message = {"MessageId": "m1", "ReceiptHandle": "r", "Body": json.dumps(running(node)),
               "Attributes": {"ApproximateReceiveCount": "1"}}  # fmt: skip
    # When the join function applies its event
    result = stack.functions["NodeJoinFunction"].invoke(
        sqs_event([message], "arn:aws:sqs:us-east-1:123456789012:q", "us-east-1")
    )
    # Then it succeeded, and no Query went to an index (a cluster of 5,000 nodes would cost a
    # join 5,000 reads, and the role does not allow it)
    assert result == {"batchItemFailures": []}
    queries = [c for c in checked("NodeJoinFunction", start) if c.action == "dynamodb:Query"]
    assert queries and all("/index/" not in c.resource for c in queries)


def test_a_push_whose_answer_was_lost_finds_its_command_with_list_commands(stack):
    # Given a node, and SendCommand's answer lost after SSM acted on it (a read timeout)
    launch(stack.client("ec2"), NodeSpec("ml-prod", "managed", "general"))
    lost = {"n": 0}

    def lose_answer(**_kwargs: object) -> None:
        lost["n"] += 1
        if lost["n"] == 1:
            raise ReadTimeoutError(endpoint_url="https://ssm.us-east-1.amazonaws.com")

    def attach(service: str, client: Any) -> None:
        if service == "ssm":
            client.meta.events.register("after-call.ssm.SendCommand", lose_answer)

    start = len(iam.calls)
    with hooked_clients(attach):
        # When the push function sends to both clusters
        result = stack.functions["ImagePushFunction"].invoke(copy.deepcopy(PUSH))
    # Then it looked the command up (ssm:ListCommands, allowed on "*") instead of sending twice
    assert result["action"] == "sent"
    assert [c.resource for c in checked("ImagePushFunction", start) if c.action == "ssm:ListCommands"] == ["*"]
    assert len(moto_commands()) == 2  # one per cluster, none twice


def test_audit_batches_are_written_with_partiql_and_not_twice(stack):
    # Given 30 nodes that report a pull
    launch(stack.client("ec2"), NodeSpec("ml-prod", "managed", "general"), 30)
    stack.functions["ImagePushFunction"].invoke(copy.deepcopy(PUSH))
    simulator = NodeSimulator(stack.put_events, "123456789012", "us-east-1", stack.output("PrefetchDocument"),
                              simulated_agent())  # fmt: skip
    simulator.step()
    start = len(iam.calls)
    # When their status events reach the audit function in batches
    with CallCounter() as counter:
        stack.run_sources()
    # Then its PartiQL statements were allowed (PartiQLInsert, PartiQLUpdate on the table) and
    # none fell back to a single UpdateItem (which doubles the requests when PartiQL is denied)
    statements = [c for c in checked("SsmAuditFunction", start) if c.action.startswith("dynamodb:PartiQL")]
    assert statements and all(c.allowed for c in statements)
    assert counter.count("dynamodb.BatchExecuteStatement") >= 2
    # (the rollout function's idempotency record, which it updates once, is not the audit's)
    assert not [c for c in checked("SsmAuditFunction", start) if c.action == "dynamodb:UpdateItem"]
    table = AuditTable(stack.output("AuditTable"))
    _, records = table.queries.image("ml/trainer", PUSH["detail"]["image-digest"])
    assert sorted(r.state for r in records) == ["cached"] * 30
