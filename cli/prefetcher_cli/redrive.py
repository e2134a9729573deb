"""`prefetcher redrive`: move messages from a dead-letter queue back to where they came from,
once what made them fail is fixed.

- A queue's dead-letter queue (AuditDLQ, NodeJoinDLQ, FleetCheckDLQ, RolloutDLQ) goes back to that queue
  (found with ListDeadLetterSourceQueues).
- ImagePushDLQ holds Lambda on-failure records (the event is their `requestPayload`) and rejected
  push events: the events go back to the push function, invoked asynchronously as EventBridge
  would (events with an `aws.` source cannot be put on EventBridge again).
- EventDeliveryDLQ holds events EventBridge could not deliver; each carries its rule's target
  (TARGET_ARN): a queue gets the event again, a function is invoked with it.

A message is deleted from the dead-letter queue only after it was handed on."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from prefetcher import clients

OUTPUT_OF = {
    "ImagePushDLQ": "ImagePushDLQUrl",
    "AuditDLQ": "AuditDLQUrl",
    "NodeJoinDLQ": "NodeJoinDLQUrl",
    "FleetCheckDLQ": "FleetCheckDLQUrl",
    "RolloutDLQ": "RolloutDLQUrl",
    "EventDeliveryDLQ": "EventDeliveryDLQUrl",
}


@dataclass
class RedriveReport:
    queue: str
    destination: str
    waiting: int = 0
    moved: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    dry_run: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "queue": self.queue,
            "destination": self.destination,
            "waiting": self.waiting,
            "moved": self.moved,
            "dry_run": self.dry_run,
            "reasons": [{"reason": r, "count": c} for r, c in self.reasons.most_common()],
        }


def stack_outputs(stack: str) -> dict[str, str]:
    answer = clients.client("cloudformation").describe_stacks(StackName=stack)
    return {o["OutputKey"]: o["OutputValue"] for o in answer["Stacks"][0].get("Outputs", [])}


def resolve_queue(name: str, stack: str) -> str:
    if name.startswith(("https://", "http://")):
        return name
    outputs = stack_outputs(stack)
    key = OUTPUT_OF.get(name, name)
    if key not in outputs:
        raise ValueError(f"{name} is not a dead-letter queue of stack {stack} (known: {', '.join(OUTPUT_OF)})")
    return outputs[key]


def reason_of(message: dict[str, Any]) -> str:
    attributes = message.get("MessageAttributes", {})
    for name in ("ErrorMessage", "ERROR_MESSAGE", "ERROR_CODE"):
        if name in attributes:
            return str(attributes[name].get("StringValue", ""))[:200]
    try:
        body = json.loads(message["Body"])
    except ValueError:
        return "(no reason recorded)"
    if isinstance(body, dict) and "responsePayload" in body:
        payload = body.get("responsePayload") or {}
        return f"{payload.get('errorType', 'Error')}: {payload.get('errorMessage', '')}"[:200]
    return "(no reason recorded: the queue's redrive policy moved it after its last receive)"


def destination_of(queue_url: str, function: str | None, to_queue: str | None = None) -> tuple[str, str]:
    """("queue", url) or ("function", name) or ("targets", "") for EventBridge's dead letters."""
    if to_queue:
        return "queue", to_queue
    sources = clients.client("sqs").list_dead_letter_source_queues(QueueUrl=queue_url).get("queueUrls", [])
    if len(sources) == 1:
        return "queue", sources[0]
    if len(sources) > 1:
        raise ValueError(f"{queue_url} is the dead-letter queue of several queues: {sources}")
    if function:
        return "function", function
    return "targets", ""


def _event_of(message: dict[str, Any]) -> str:
    body = str(message["Body"])
    try:
        parsed = json.loads(body)
    except ValueError:
        return body
    if isinstance(parsed, dict) and "requestPayload" in parsed and "requestContext" in parsed:
        return json.dumps(parsed["requestPayload"])
    return body


def _hand_on(kind: str, where: str, message: dict[str, Any]) -> None:
    if kind == "queue":
        clients.client("sqs").send_message(QueueUrl=where, MessageBody=_event_of(message))
        return
    if kind == "function":
        clients.client("lambda").invoke(FunctionName=where, InvocationType="Event", Payload=_event_of(message).encode())
        return
    target = message.get("MessageAttributes", {}).get("TARGET_ARN", {}).get("StringValue", "")
    if ":sqs:" in target:
        account, name = target.split(":")[4:6]
        url = clients.client("sqs").get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)["QueueUrl"]
        clients.client("sqs").send_message(QueueUrl=url, MessageBody=message["Body"])
    elif ":lambda:" in target:
        clients.client("lambda").invoke(FunctionName=target, InvocationType="Event", Payload=message["Body"].encode())
    else:
        raise ValueError(f"message {message['MessageId']} names no target to redrive to")


def redrive(
    queue_url: str, *, function: str | None = None, to_queue: str | None = None, dry_run: bool = False, limit: int = 0
) -> RedriveReport:
    sqs = clients.client("sqs")
    kind, where = destination_of(queue_url, function, to_queue)
    report = RedriveReport(queue=queue_url, destination=where or "each message's target", dry_run=dry_run)
    attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages"])
    report.waiting = int(attributes["Attributes"]["ApproximateNumberOfMessages"])
    seen: set[str] = set()
    while not limit or report.moved < limit:
        answer = sqs.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=10,
            MessageAttributeNames=["All"],
            # A dry run looks without taking: the messages are visible again at once.
            VisibilityTimeout=0 if dry_run else 60,
        )
        messages = [m for m in answer.get("Messages", []) if m["MessageId"] not in seen]
        if not messages:
            break
        for message in messages:
            seen.add(message["MessageId"])
            report.reasons[reason_of(message)] += 1
            if dry_run:
                continue
            _hand_on(kind, where, message)
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
            report.moved += 1
            if limit and report.moved >= limit:
                break
        if dry_run and len(seen) >= report.waiting:
            break
    return report
