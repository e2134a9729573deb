"""The local stack itself: what a stack started in a process holds when it starts."""

from __future__ import annotations

import uuid
from typing import TextIO

import boto3

from devtools.local_stack.servers import CREDENTIALS, REGION, Servers
from devtools.local_stack.stack import LocalStack
from tests.helpers import load_event

AUDIT = load_event("sqs-ssm-invocation-success.json")


def instances(servers: Servers) -> list[str]:
    ec2 = boto3.client("ec2", endpoint_url=servers.moto.endpoint, region_name=REGION, **_keys())
    pages = ec2.get_paginator("describe_instances").paginate()
    return [i["InstanceId"] for page in pages for r in page["Reservations"] for i in r["Instances"]]


def _keys() -> dict[str, str]:
    return {
        "aws_access_key_id": CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    }


def test_a_stack_started_after_another_in_the_same_process_starts_without_its_instances() -> None:
    # Given a first stack whose EC2 holds an instance (moto keeps its backends in this process)
    first = Servers().start()
    try:
        ec2 = boto3.client("ec2", endpoint_url=first.moto.endpoint, region_name=REGION, **_keys())
        ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1)
        assert len(instances(first)) == 1
    finally:
        first.stop()
    # When a second stack starts in the same process (two demos in one test run)
    second = Servers().start()
    try:
        # Then it holds nothing of the first one's
        assert instances(second) == []
    finally:
        second.stop()


def test_a_function_of_a_second_stack_in_the_same_process_logs_to_that_stacks_log(servers, aws_env, tmp_path) -> None:
    # Given a stack whose SsmAuditFunction ran and whose log file is closed since (a demo that ended)
    first, second = tmp_path / "first.log", tmp_path / "second.log"
    with first.open("w") as log:
        deploy(servers, log).functions["SsmAuditFunction"].invoke(AUDIT)
    assert "batch recorded" in first.read_text()
    # When the same function of a second stack runs (Powertools configures a logger once per process)
    with second.open("w") as log:
        result = deploy(servers, log).functions["SsmAuditFunction"].invoke(AUDIT)
    # Then it runs, and its lines are in the second stack's log
    assert result == {"batchItemFailures": []}
    assert "batch recorded" in second.read_text()


def deploy(servers: Servers, log: TextIO) -> LocalStack:
    servers.reset_moto()
    overrides = {"TargetClusters": "ml-prod,ml-batch"}
    return LocalStack(servers, name=f"t{uuid.uuid4().hex[:10]}", overrides=overrides, log=log).deploy()
