"""Rebuild the SQS-wrapped sample events (events/sqs-*.json) from the raw EventBridge events.

When an EventBridge rule targets an SQS queue and a Lambda function reads that queue, the
function receives the shape documented in "Using Lambda with Amazon SQS"
(https://docs.aws.amazon.com/lambda/latest/dg/with-sqs.html): a "Records" list, each record's
"body" being the EventBridge event serialized as a (compact) JSON string.

Everything here is deterministic, so the generated files never drift from the raw events:

- messageId is a UUIDv5 of (queue ARN, event id, delivery number): a second delivery of the same
  event (EventBridge and SQS standard queues are at-least-once) is a new message, new messageId.
- receiptHandle is derived from the messageId (opaque in real life; only its shape matters).
- SentTimestamp is the event's "time" plus a small delivery delay, in epoch milliseconds, as a
  string; ApproximateFirstReceiveTimestamp follows it.
- md5OfBody is the real MD5 hex digest of the UTF-8 body.

Run from the repository root (stdlib only):  python events/wrap_sqs.py
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

EVENTS_DIR = Path(__file__).resolve().parent

ACCOUNT = "123456789012"
REGION = "us-east-1"
AUDIT_QUEUE_ARN = f"arn:aws:sqs:{REGION}:{ACCOUNT}:eks-image-prefetcher-AuditQueue"
NODE_JOIN_QUEUE_ARN = f"arn:aws:sqs:{REGION}:{ACCOUNT}:eks-image-prefetcher-NodeJoinQueue"
FLEET_CHECK_QUEUE_ARN = f"arn:aws:sqs:{REGION}:{ACCOUNT}:eks-image-prefetcher-FleetCheckQueue"
ROLLOUT_QUEUE_ARN = f"arn:aws:sqs:{REGION}:{ACCOUNT}:eks-image-prefetcher-RolloutQueue"

# SenderId as in the Lambda documentation's sample SQS event (an IAM unique ID placeholder).
SENDER_ID = "AIDAIENQZJOLO23YVJ4VO"

# Fixed namespace for the messageId UUIDv5s (never change it: every messageId would change).
MESSAGE_ID_NAMESPACE = uuid.UUID("6f1c7d3e-2b8a-4e5f-9a0b-1c2d3e4f5a6b")

# EventBridge -> SQS delivery delay after the event's time, and SQS -> Lambda poll delay.
DELIVERY_DELAY_MS = 212
REDELIVERY_DELAY_MS = 1_187  # a duplicate delivery arrives a little later
RECEIVE_DELAY_MS = 31

# Output file -> (queue ARN, [(raw event file, delivery number), ...]).
# Delivery number 1 is the first delivery; 2 is an at-least-once duplicate of the same event.
OUTPUTS: dict[str, tuple[str, list[tuple[str, int]]]] = {
    "sqs-ssm-invocation-success.json": (
        AUDIT_QUEUE_ARN,
        [("ssm-invocation-success.json", 1)],
    ),
    "sqs-ssm-invocation-batch.json": (
        AUDIT_QUEUE_ARN,
        [
            ("ssm-invocation-pending.json", 1),
            ("ssm-invocation-inprogress.json", 1),
            ("ssm-invocation-success.json", 1),
            ("ssm-invocation-success.json", 2),
        ],
    ),
    "sqs-ssm-invocation-failed.json": (
        AUDIT_QUEUE_ARN,
        [("ssm-invocation-failed.json", 1)],
    ),
    "sqs-ec2-running.json": (
        NODE_JOIN_QUEUE_ARN,
        [("ec2-running.json", 1)],
    ),
    "sqs-ec2-terminated.json": (
        NODE_JOIN_QUEUE_ARN,
        [("ec2-terminated.json", 1)],
    ),
    "sqs-events-scheduled.json": (
        FLEET_CHECK_QUEUE_ARN,
        [("events-scheduled.json", 1)],
    ),
    "sqs-fleet-check-requested.json": (
        FLEET_CHECK_QUEUE_ARN,
        [("fleet-check-requested.json", 1)],
    ),
    # The command's end, and the same event delivered again (the second must emit nothing).
    "sqs-ssm-command-success.json": (
        ROLLOUT_QUEUE_ARN,
        [("ssm-command-success.json", 1), ("ssm-command-success.json", 2)],
    ),
}


def body_of(event: dict[str, Any]) -> str:
    """The EventBridge event as SQS carries it: compact JSON, key order kept."""
    return json.dumps(event, separators=(",", ":"))


def md5_hex(text: str) -> str:
    return hashlib.md5(text.encode("utf-8"), usedforsecurity=False).hexdigest()


def _epoch_ms(event_time: str) -> int:
    """EventBridge 'time' (e.g. 2026-11-29T10:15:00Z) as epoch milliseconds."""
    parsed = datetime.fromisoformat(event_time.replace("Z", "+00:00"))
    return int(parsed.timestamp() * 1000)


def sqs_record(event: dict[str, Any], queue_arn: str, delivery: int) -> dict[str, Any]:
    """One record of a Lambda SQS event whose message carries ``event``."""
    body = body_of(event)
    message_id = str(uuid.uuid5(MESSAGE_ID_NAMESPACE, f"{queue_arn}#{event['id']}#{delivery}"))
    handle_bytes = b"".join(hashlib.sha256(f"receipt#{message_id}#{part}".encode()).digest() for part in range(3))
    receipt_handle = "AQEB" + base64.b64encode(handle_bytes).decode("ascii")
    sent = _epoch_ms(event["time"]) + DELIVERY_DELAY_MS + (delivery - 1) * REDELIVERY_DELAY_MS
    region = queue_arn.split(":")[3]
    return {
        "messageId": message_id,
        "receiptHandle": receipt_handle,
        "body": body,
        "attributes": {
            "ApproximateReceiveCount": "1",
            "SentTimestamp": str(sent),
            "SenderId": SENDER_ID,
            "ApproximateFirstReceiveTimestamp": str(sent + RECEIVE_DELAY_MS),
        },
        "messageAttributes": {},
        "md5OfBody": md5_hex(body),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    }


def load_event(name: str, events_dir: Path = EVENTS_DIR) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((events_dir / name).read_text(encoding="utf-8"))
    return loaded


def build_all(events_dir: Path = EVENTS_DIR) -> dict[str, dict[str, Any]]:
    """Every SQS-wrapped event, by output file name, built from the raw events in events_dir."""
    built: dict[str, dict[str, Any]] = {}
    for output, (queue_arn, sources) in OUTPUTS.items():
        records = [sqs_record(load_event(name, events_dir), queue_arn, delivery) for name, delivery in sources]
        built[output] = {"Records": records}
    return built


def render(document: dict[str, Any]) -> str:
    """The on-disk form of every events/*.json file: 2-space indent, trailing newline."""
    return json.dumps(document, indent=2) + "\n"


def main() -> None:
    for output, document in build_all().items():
        path = EVENTS_DIR / output
        path.write_text(render(document), encoding="utf-8")
        print(f"wrote {path.relative_to(EVENTS_DIR.parent)}")


if __name__ == "__main__":
    main()
