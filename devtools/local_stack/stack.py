"""The deployed stack, locally: on the servers of servers.py (DynamoDB Local and moto), create what
template.yaml declares and run its functions with their event sources. Used by `make demo`,
`make invoke`, the integration tests and the benchmarks."""

from __future__ import annotations

import contextlib
import json
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import boto3
import yaml
from botocore.config import Config
from prefetcher import clients
from prefetcher.timestamps import event_time

from devtools.local_stack import iam, moto_patches
from devtools.local_stack.lambda_runtime import AsyncEventSource, LocalFunction, SqsEventSource
from devtools.local_stack.servers import ACCOUNT, REGION, Servers
from devtools.local_stack.template_resolver import Stack, load, samconfig_parameter_overrides, transformed


@dataclass
class LocalStack:
    """The resources of template.yaml, created on `servers`, and its functions."""

    servers: Servers
    name: str = "eks-image-prefetcher"
    overrides: dict[str, str] = field(default_factory=dict)
    log: Any = field(default_factory=lambda: sys.stderr)
    # Locally, queues make failed messages visible again after this many seconds instead of the
    # template's VisibilityTimeout (180 s), so demos and tests do not wait minutes.
    visibility_timeout: int | None = 1
    # Extra environment per function (tests shorten JOIN_RETRY_DELAYS, for instance).
    extra_env: dict[str, dict[str, str]] = field(default_factory=dict)
    stack: Stack = field(init=False)
    functions: dict[str, LocalFunction] = field(default_factory=dict)
    sources: list[SqsEventSource | AsyncEventSource] = field(default_factory=list)
    queues: dict[str, str] = field(default_factory=dict)  # logical id -> url
    # Schedule rules (ScheduleExpression): logical id -> their targets' queue URLs. moto does not
    # fire schedules; `fire_schedule` does, with the event EventBridge would deliver.
    schedules: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.stack = Stack(
            template=load(),
            name=self.name,
            region=REGION,
            account=ACCOUNT,
            overrides={**samconfig_parameter_overrides(), **self.overrides},
        )

    def client(self, service: str) -> Any:
        env = self.servers.environment()
        endpoint = env["AWS_ENDPOINT_URL_DYNAMODB"] if service == "dynamodb" else env["AWS_ENDPOINT_URL"]
        return boto3.client(
            service,  # type: ignore[call-overload]
            region_name=REGION,
            endpoint_url=endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            aws_session_token="testing",
            config=Config(retries={"max_attempts": 1}),
        )

    # ---- deploy ---------------------------------------------------------------------------

    def deploy(self) -> LocalStack:
        self.stack.parameters()  # validate parameters first: a bad override fails before anything is made
        self._create_tables()
        self._create_queues()
        self._create_documents()
        self._create_functions()
        self._create_rules()
        self._assign_roles()
        return self

    def _assign_roles(self) -> None:
        """Each function acts with its role as SAM generates it (iam.py checks every call)."""
        iam.install(clients)
        statements = iam.role_statements(transformed(), self.stack.resolve)
        for logical_id, function in self.functions.items():
            function.principal = iam.Principal(
                function=logical_id,
                statements=statements[logical_id],
                region=REGION,
                account=ACCOUNT,
                tags=lambda instance_id: moto_patches.instance_tags(ACCOUNT, REGION, instance_id),
            )

    def _remember(self, logical_id: str, ref: str, arn: str) -> None:
        self.stack.physical[logical_id] = ref
        self.stack.arns[logical_id] = arn

    def _create_tables(self) -> None:
        ddb = self.client("dynamodb")
        for logical_id, resource in self.stack.of_type("AWS::DynamoDB::Table").items():
            spec = self.stack.resolve(resource["Properties"])
            name = self.stack.local_name(logical_id)
            request: dict[str, Any] = {
                "TableName": name,
                "AttributeDefinitions": spec["AttributeDefinitions"],
                "KeySchema": spec["KeySchema"],
                "BillingMode": spec.get("BillingMode", "PAY_PER_REQUEST"),
            }
            if spec.get("GlobalSecondaryIndexes"):
                request["GlobalSecondaryIndexes"] = spec["GlobalSecondaryIndexes"]
            with contextlib.suppress(ddb.exceptions.ResourceInUseException):
                ddb.create_table(**request)
            ttl = spec.get("TimeToLiveSpecification")
            if ttl:
                with contextlib.suppress(Exception):  # DynamoDB Local may refuse a repeated TTL update
                    ddb.update_time_to_live(TableName=name, TimeToLiveSpecification=ttl)
            self._remember(logical_id, name, f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{name}")

    def _create_queue(self, logical_id: str, attributes: dict[str, str]) -> str:
        sqs = self.client("sqs")
        name = self.stack.local_name(logical_id)
        url: str = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        self.queues[logical_id] = url
        self._remember(logical_id, url, f"arn:aws:sqs:{REGION}:{ACCOUNT}:{name}")
        return url

    def _create_queues(self) -> None:
        queues = self.stack.of_type("AWS::SQS::Queue")
        # Dead-letter queues first: a redrive policy names its queue's ARN.
        ordered = sorted(queues, key=lambda lid: "RedrivePolicy" in queues[lid].get("Properties", {}))
        for logical_id in ordered:
            properties = queues[logical_id].get("Properties", {})
            attributes = {}
            for key in ("VisibilityTimeout", "MessageRetentionPeriod", "DelaySeconds"):
                if key in properties:
                    attributes[key] = str(self.stack.resolve(properties[key]))
            if self.visibility_timeout is not None:
                attributes["VisibilityTimeout"] = str(self.visibility_timeout)
            if "RedrivePolicy" in properties:
                attributes["RedrivePolicy"] = json.dumps(self.stack.resolve(properties["RedrivePolicy"]))
            self._create_queue(logical_id, attributes)

    def _create_documents(self) -> None:
        ssm = self.client("ssm")
        for logical_id, resource in self.stack.of_type("AWS::SSM::Document").items():
            properties = resource["Properties"]
            name = self.stack.local_name(logical_id)
            content = properties["Content"]
            with contextlib.suppress(ssm.exceptions.DocumentAlreadyExists):
                ssm.create_document(
                    Name=name,
                    Content=yaml.safe_dump(content, sort_keys=False),
                    DocumentType=properties.get("DocumentType", "Command"),
                    DocumentFormat="YAML",
                    TargetType=properties.get("TargetType", "/"),
                )
            moto_patches.register_document(name, content)
            self._remember(logical_id, name, f"arn:aws:ssm:{REGION}:{ACCOUNT}:document/{name}")

    def _create_functions(self) -> None:
        for logical_id in self.stack.of_type("AWS::Serverless::Function"):
            function = LocalFunction(
                stack=self.stack,
                logical_id=logical_id,
                base_environment={
                    **self.servers.environment(),
                    "POWERTOOLS_TRACE_DISABLED": "true",
                    **self.extra_env.get(logical_id, {}),
                },
                log=self.log,
            )
            self.functions[logical_id] = function
            self._remember(logical_id, function.name, function.arn)

    def _put_rule(self, logical_id: str, pattern: dict[str, Any], target_arns: list[tuple[str, str]]) -> None:
        events = self.client("events")
        name = self.stack.local_name(logical_id)
        arn = events.put_rule(Name=name, EventPattern=json.dumps(pattern), State="ENABLED")["RuleArn"]
        events.put_targets(Rule=name, Targets=[{"Id": tid, "Arn": tarn} for tid, tarn in target_arns])
        self._remember(logical_id, name, arn)

    def _put_schedule(self, logical_id: str, expression: str, target_arns: list[tuple[str, str]]) -> None:
        events = self.client("events")
        name = self.stack.local_name(logical_id)
        arn = events.put_rule(Name=name, ScheduleExpression=expression, State="ENABLED")["RuleArn"]
        # No targets in moto: it would match every event to a rule without a pattern, where
        # EventBridge sends a schedule rule's targets only its own events (fire_schedule).
        self._remember(logical_id, name, arn)
        self.schedules[logical_id] = [self._queue_url_of_arn(tarn) for _, tarn in target_arns]

    def scheduled_event(self, logical_id: str, event_id: str | None = None) -> dict[str, Any]:
        """The event a schedule rule sends when it fires (AWS's "Scheduled Event": source
        aws.events, detail {}, the rule's ARN in resources)."""
        return {
            "version": "0", "id": event_id or str(uuid.uuid4()), "detail-type": "Scheduled Event",
            "source": "aws.events", "account": ACCOUNT, "time": event_time(), "region": REGION,
            "resources": [self.stack.arns[logical_id]], "detail": {},
        }  # fmt: skip

    def fire_schedule(self, logical_id: str, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Fire a schedule rule once (or deliver `event` again, as EventBridge may): the event
        goes to each of the rule's queue targets. Returns the event."""
        event = event or self.scheduled_event(logical_id)
        for url in self.schedules[logical_id]:
            self.client("sqs").send_message(QueueUrl=url, MessageBody=json.dumps(event))
        return event

    def _create_rules(self) -> None:
        sqs = self.client("sqs")
        for logical_id, resource in self.stack.of_type("AWS::Events::Rule").items():
            properties = resource["Properties"]
            targets = [(t["Id"], str(self.stack.resolve(t["Arn"]))) for t in properties.get("Targets", [])]
            if "ScheduleExpression" in properties:
                self._put_schedule(logical_id, str(self.stack.resolve(properties["ScheduleExpression"])), targets)
                continue
            self._put_rule(logical_id, self.stack.resolve(properties["EventPattern"]), targets)
        for function_id, resource in self.stack.of_type("AWS::Serverless::Function").items():
            function = self.functions[function_id]
            for event_name, event in resource["Properties"].get("Events", {}).items():
                spec = self.stack.resolve(event.get("Properties", {}))
                if event["Type"] == "EventBridgeRule":
                    # The rule is real; its Lambda target is a tap queue that the local async
                    # invoker drains (moto cannot invoke our function).
                    tap = self._create_queue(f"{function_id}{event_name}Invoke", {})
                    self._put_rule(
                        f"{function_id}{event_name}",
                        spec["Pattern"],
                        [("Lambda", self.stack.arns[f"{function_id}{event_name}Invoke"])],
                    )
                    invoke = self.stack.resolve(resource["Properties"].get("EventInvokeConfig", {}))
                    destination = invoke.get("DestinationConfig", {}).get("OnFailure", {}).get("Destination", "")
                    self.sources.append(
                        AsyncEventSource(
                            function=function,
                            tap_queue_url=tap,
                            max_retries=int(invoke.get("MaximumRetryAttempts", 2)),
                            on_failure_queue_url=self._queue_url_of_arn(destination) if destination else "",
                            sqs=sqs,
                        )
                    )
                elif event["Type"] == "SQS":
                    queue_arn = spec["Queue"]
                    self.sources.append(
                        SqsEventSource(
                            function=function,
                            queue_url=self._queue_url_of_arn(queue_arn),
                            queue_arn=queue_arn,
                            batch_size=int(spec.get("BatchSize", 10)),
                            report_batch_item_failures="ReportBatchItemFailures"
                            in spec.get("FunctionResponseTypes", []),
                            sqs=sqs,
                        )
                    )

    def _queue_url_of_arn(self, arn: str) -> str:
        for logical_id, known in self.stack.arns.items():
            if known == arn and logical_id in self.queues:
                return self.queues[logical_id]
        raise KeyError(f"no local queue has ARN {arn}")

    # ---- run ------------------------------------------------------------------------------

    def output(self, logical_id: str) -> str:
        return self.stack.physical[logical_id]

    def function_env(self, logical_id: str) -> dict[str, str]:
        return self.functions[logical_id].environment()

    def queue_rule(self, name: str, pattern: dict[str, Any]) -> str:
        """A rule on the default bus with `pattern` whose target is a new queue `name` (what a
        pipeline's trigger stands in for locally); returns the queue's URL."""
        sqs, events = self.client("sqs"), self.client("events")
        url: str = sqs.create_queue(QueueName=name)["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        events.put_rule(Name=name, EventPattern=json.dumps(pattern), State="ENABLED")
        events.put_targets(Rule=name, Targets=[{"Id": "pipeline", "Arn": arn}])
        return url

    def put_events(self, *events: dict[str, Any]) -> None:
        """Send events as AWS services would (to the default bus, through the rules)."""
        entries = []
        for event in events:
            entry: dict[str, Any] = {
                "Source": event["source"],
                "DetailType": event["detail-type"],
                "Detail": json.dumps(event["detail"]),
                "Resources": event.get("resources", []),
            }
            if event.get("time"):
                entry["Time"] = datetime.fromisoformat(event["time"].replace("Z", "+00:00"))
            entries.append(entry)
        for start in range(0, len(entries), 10):
            answer = self.client("events").put_events(Entries=entries[start : start + 10])
            if answer.get("FailedEntryCount"):
                raise RuntimeError(f"PutEvents failed: {answer['Entries']}")

    def queue_depth(self, logical_id: str) -> int:
        attributes = self.client("sqs").get_queue_attributes(
            QueueUrl=self.queues[logical_id],
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])

    def run_sources(self, timeout: float = 60, idle_rounds: int = 2, between: Any = None) -> int:
        """Deliver queued events to the functions until every source queue stays empty;
        `between` (the node simulator, for instance) runs after every round."""
        delivered = 0
        idle = 0
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            count = sum(source.poll_once() for source in self.sources)
            extra = between() if between else 0
            delivered += count
            if count == 0 and not extra:
                in_flight = any(self._in_flight(source) for source in self.sources)
                idle = idle + 1 if not in_flight else 0
                if idle >= idle_rounds:
                    return delivered
                time.sleep(0.2)
            else:
                idle = 0
        raise TimeoutError(f"event sources still busy after {timeout:.0f} s")

    def _in_flight(self, source: SqsEventSource | AsyncEventSource) -> bool:
        url = source.queue_url if isinstance(source, SqsEventSource) else source.tap_queue_url
        attributes = self.client("sqs").get_queue_attributes(
            QueueUrl=url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return (
            int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])
            > 0
        )
