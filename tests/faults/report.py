"""Write docs/reliability.md and docs/reliability.json from the figures the fault-injection and
hostile-input tests left in .local/ (`make reliability` runs both, then this)."""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

from tests.helpers import ROOT

FAULTS = ROOT / ".local" / "reliability.json"
HOSTILE = ROOT / ".local" / "hostile.json"
DOC = ROOT / "docs" / "reliability.md"
DATA = ROOT / "docs" / "reliability.json"
COMMAND = "make reliability"


def main() -> int:
    faults: dict[str, Any] = json.loads(FAULTS.read_text())
    hostile: dict[str, Any] = json.loads(HOSTILE.read_text())
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
    ).stdout.strip()
    data = {
        "command": COMMAND,
        "commit": commit,
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "paths": {
            name: {
                "sent": r["sent"],
                "faults": sum(r["faults"].values()),
                "fault_kinds": r["faults"],
                "aws_calls": r["aws_calls"],
                "applied_once": r["applied_once"],
                "dead_lettered": r["dead_lettered"],
                "dead_lettered_with_reason": r["dead_lettered_with_reason"],
                "lost": r["lost"],
                "applied_twice": r["applied_twice"],
                "dead_letter_reasons": r.get("dead_letter_reasons", {}),
                "seconds": r["seconds"],
            }
            for name, r in sorted(faults.items())
        },
        "handlers": hostile,
    }
    DATA.write_text(json.dumps(data, indent=2) + "\n")
    rows = [
        f"| {name} | {p['sent']} | {p['aws_calls']} | {p['faults']} | {p['applied_once']} | {p['dead_lettered']} "
        f"({p['dead_lettered_with_reason']} with a reason) | {p['lost']} | {p['applied_twice']} |"
        for name, p in data["paths"].items()
    ]
    kinds = sorted({k for p in data["paths"].values() for k in p["fault_kinds"]})
    kind_rows = [
        f"| {name} | " + " | ".join(str(p["fault_kinds"].get(k, 0)) for k in kinds) + " |"
        for name, p in data["paths"].items()
    ]
    reasons = [
        f"- {name}: " + "; ".join(f"{count} x {reason}" for reason, count in p["dead_letter_reasons"].items())
        for name, p in data["paths"].items()
        if p["dead_letter_reasons"]
    ]
    hostile_rows = [f"| {h} | {v['hostile_tried']} | {v['reached_send_command']} |" for h, v in sorted(hostile.items())]
    DOC.write_text(
        "\n".join(
            [
                "# Reliability",
                "",
                f"Produced by `{COMMAND}` (the fault-injection suite `tests/faults` and the hostile-input",
                f"tests `tests/integration/test_hostile.py`, then `python -m tests.faults.report`), commit {commit},",
                f"{data['date']}. The same figures are in `docs/reliability.json`. CI runs both suites in `make test`",
                "and fails if anything is lost or applied twice.",
                "",
                "## 1,000 events per path at a 20% fault rate",
                "",
                "Every AWS call the functions make is answered, one time in five, with a fault (see",
                "`tests/faults/harness.py`): throttling (`ProvisionedThroughputExceededException`,",
                "`ThrottlingException`, `RequestLimitExceeded`), a 5xx error, a read timeout, a race with a",
                "duplicate of the same conditional write or PartiQL batch (which then fails its conditions for",
                "real), or, for the join path's sends, `InvalidInstanceId`. A PartiQL batch that gets through",
                "has each of its statements throttled at the same rate (`statement_errors`: not done, answered",
                "`ThrottlingError`, the others done). One invocation in five times out at a random",
                "call, with no cleanup. The real machinery handles them: botocore's standard retry mode (its",
                "delays scaled to a millisecond), partial batch failures, the queues' visibility timeouts and",
                "redrive policies, Lambda's async retries and on-failure destination (as the local stack",
                "emulates them), idempotency on event ids, conditional writes, and the exactly-once sends.",
                "The audit queue delivers batches of 25 here instead of template.yaml's 100: the timeout is",
                "drawn per invocation, and 1,000 events in batches of 100 are too few invocations for it to",
                "show. Every call is also authorised against the calling function's role, as AWS would",
                "authorise it (the local stack's IAM check, docs/aws-conformance.md): the suite fails on any",
                "call AWS would refuse, so these runs made none.",
                "",
                "| Path | Events | AWS calls | Faults injected | Applied exactly once | Dead-lettered | Lost | Applied twice |",
                "|---|---|---|---|---|---|---|---|",
                *rows,
                "",
                "Faults by kind:",
                "",
                "| Path | " + " | ".join(kinds) + " |",
                "|---|" + "---|" * len(kinds),
                *kind_rows,
                "",
                "Why the dead-lettered events are there (each kept with its reason; `prefetcher redrive`",
                "sends them back, and since every step is idempotent, a redriven event that was partly",
                "applied completes without doing anything twice):",
                "",
                *(reasons or ["- none"]),
                "",
                "What each fault does:",
                "",
                "- Throttling, 5xx and read timeouts: botocore retries them (standard mode, 5 attempts, as",
                "  template.yaml sets `AWS_RETRY_MODE` and `AWS_MAX_ATTEMPTS` for every function). SendCommand",
                "  is the exception: its outcome may be unknown after a timeout or a 5xx, so it is not retried",
                "  blindly; `prefetcher.send_once` looks for the command by the marker in its Comment first.",
                "- A timeout or an error that outlasts the retries fails the invocation: the push function is",
                "  retried by Lambda (twice, then its on-failure destination, `ImagePushDLQ`, with the error);",
                "  a queue-fed function reports the record (or, on a timeout, the whole batch) as failed and",
                "  the queue redelivers it until `maxReceiveCount`, then moves it to the dead-letter queue.",
                "- A duplicate racing a conditional write: the loser sees `ConditionalCheckFailedException`",
                '  and treats it as "already recorded" (audit), "newer state recorded" (catalog, node',
                '  lifecycle) or "claimed" (sends), which is what a duplicate delivery means.',
                "- A statement of a PartiQL batch that fails (throttled, or anything else but the expected",
                "  condition failure): that one write is done again as a single conditional `UpdateItem`,",
                "  with botocore's retries; the rest of the batch stands.",
                "- `InvalidInstanceId` on a join: the node's agent is not registered yet; the message comes",
                "  back after the next delay; past the bound the node is recorded undeliverable.",
                "",
                "## Hostile and malformed events",
                "",
                "Each handler got generated (hypothesis) and hand-picked bad events: missing and extra fields,",
                "wrong types, 10,000-character strings, unicode, shell and path injection in repository",
                "names, tags, digests and instance ids, forged sources. None crashed a batch and none reached",
                "`SendCommand`. Malformed or forged events go to the path's dead-letter queue at once, with",
                "the validation error in the `ErrorMessage` attribute; well-formed events that are not ours",
                "(another SSM document, an instance of no target cluster, a DELETE or untagged push) are",
                "dropped with a logged reason; well-formed status events naming a command never sent are",
                "retried by the queue and then dead-lettered.",
                "",
                "| Handler | Hostile events tried | Reached SendCommand |",
                "|---|---|---|",
                *hostile_rows,
                "",
            ]
        )
    )
    print(f"wrote {DOC.relative_to(ROOT)} and {DATA.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
