"""`prefetcher`: ask the audit table which nodes hold an image, what failed and why, how covered a
cluster is; ask for a fleet check now (`verify`); move a dead-letter queue's messages back.
(`prefetcher local ...` runs the local stack of a clone of the repository: prefetcher_cli/local.py.)

Exit codes: 0 done; 1 not found (unknown image, node or cluster); 2 usage; 3 the table or the
endpoint cannot be reached (or credentials are missing)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, NoRegionError
from prefetcher import clients
from prefetcher.errors import (
    EndpointUnreachableError,
    ImageNotFoundError,
    PrefetcherError,
    TableNotFoundError,
)
from prefetcher.store import AuditTable

from prefetcher_cli import output, reports

DEFAULT_STACK = "eks-image-prefetcher"
EXIT_NOT_FOUND, EXIT_USAGE, EXIT_UNREACHABLE = 1, 2, 3


def resolve_table(args: argparse.Namespace) -> str:
    """--table, else $PREFETCHER_TABLE, else the AuditTableName output of the stack."""
    if args.table:
        return str(args.table)
    if os.environ.get("PREFETCHER_TABLE"):
        return os.environ["PREFETCHER_TABLE"]
    try:
        stacks = clients.client("cloudformation").describe_stacks(StackName=args.stack)["Stacks"]
    except ClientError as error:
        raise TableNotFoundError(
            f"no --table given and stack {args.stack} cannot be read ({error.response['Error']['Message']}); "
            "pass --table or --stack"
        ) from None
    for stack_output in stacks[0].get("Outputs", []):
        if stack_output["OutputKey"] == "AuditTableName":
            return str(stack_output["OutputValue"])
    raise TableNotFoundError(f"stack {args.stack} has no AuditTableName output")


def _query(
    args: argparse.Namespace,
    build: Callable[[AuditTable], dict[str, Any]],
    text: Callable[[dict[str, Any]], str],
) -> int:
    view = build(AuditTable(resolve_table(args)))
    print(output.as_json(view) if args.output == "json" else text(view))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    return _query(args, lambda t: reports.status(t, args.image), output.status)


def cmd_node(args: argparse.Namespace) -> int:
    return _query(args, lambda t: reports.node(t, args.instance_id), output.node)


def cmd_coverage(args: argparse.Namespace) -> int:
    return _query(args, lambda t: reports.coverage(t, args.cluster), output.coverage)


def cmd_failures(args: argparse.Namespace) -> int:
    since = reports.parse_duration(args.since)
    return _query(args, lambda t: reports.failures(t, since, args.cluster), output.failures)


def cmd_redrive(args: argparse.Namespace) -> int:
    from prefetcher_cli import redrive

    try:
        url = redrive.resolve_queue(args.queue, args.stack)
        function = args.function
        if function is None and args.queue == "ImagePushDLQ":
            function = redrive.stack_outputs(args.stack).get("ImagePushFunctionName")
        report = redrive.redrive(url, function=function, to_queue=args.to_queue, dry_run=args.dry_run, limit=args.max)
    except ValueError as error:
        raise reports.UsageError(str(error)) from None
    view = report.as_dict()
    if args.output == "json":
        print(output.as_json(view))
    else:
        verb = "would move" if report.dry_run else "moved"
        count = report.waiting if report.dry_run else report.moved
        print(f"{report.queue}: {report.waiting} waiting; {verb} {count} to {report.destination}")
        if view["reasons"]:
            print(output.table(["COUNT", "REASON"], [(r["count"], r["reason"]) for r in view["reasons"]]))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from prefetcher_cli import verify

    try:
        view = verify.request(args.cluster or [])
    except verify.VerifyError as error:
        raise reports.UsageError(str(error)) from None
    if args.output == "json":
        print(output.as_json(view))
    else:
        which = ", ".join(view["detail"]["clusters"]) or "every target cluster"
        print(f"{view['detail_type']} ({view['source']}) put on the default event bus: event {view['event_id']}")
        print(f"fleet check of {which}: catch-up of nodes lacking a current image, then an inventory")
        print("follow it with `prefetcher coverage` (last verified, evicted, given-up) and `prefetcher failures`")
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="prefetcher", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--table", help="audit table name (default: $PREFETCHER_TABLE, else the stack's output)")
    common.add_argument(
        "--stack", default=DEFAULT_STACK, help=f"stack to read the table name from (default {DEFAULT_STACK})"
    )
    common.add_argument("--output", "-o", choices=["table", "json"], default="table")
    sub = top.add_subparsers(dest="command", required=True)

    p = sub.add_parser("status", parents=[common], help="which nodes hold (or failed, or still pull) an image")
    p.add_argument("image", help="repository:tag or repository@sha256:<digest> (a registry prefix is ignored)")
    p.set_defaults(run=cmd_status)

    p = sub.add_parser("node", parents=[common], help="which images a node holds")
    p.add_argument("instance_id")
    p.set_defaults(run=cmd_node)

    p = sub.add_parser(
        "coverage", parents=[common], help="share of each cluster's live nodes holding each current image"
    )
    p.add_argument("--cluster")
    p.set_defaults(run=cmd_coverage)

    p = sub.add_parser("failures", parents=[common], help="current failures, newest first, grouped by reason")
    p.add_argument("--since", default="24h", help="how far back (30m, 24h, 7d; default 24h)")
    p.add_argument("--cluster")
    p.set_defaults(run=cmd_failures)

    p = sub.add_parser("verify", help="run the fleet check now (catch-up and inventory) for some or all clusters")
    p.add_argument("--cluster", action="append", help="a target cluster (repeat; default: every target cluster)")
    p.add_argument("--output", "-o", choices=["table", "json"], default="table")
    p.set_defaults(run=cmd_verify)

    p = sub.add_parser("redrive", help="move a dead-letter queue's messages back to where they came from")
    p.add_argument(
        "queue",
        help=(
            "ImagePushDLQ, AuditDLQ, NodeJoinDLQ, FleetCheckDLQ, RolloutDLQ, EventDeliveryDLQ (from the stack), "
            "or a queue URL"
        ),
    )
    p.add_argument("--dry-run", action="store_true", help="count and show the reasons; move nothing")
    p.add_argument("--max", type=int, default=0, help="move at most this many (default: all)")
    p.add_argument("--function", help="for a queue without a source queue: the function to invoke with each event")
    p.add_argument("--to-queue", help="send the messages (their events) to this queue instead")
    p.add_argument("--stack", default=DEFAULT_STACK)
    p.add_argument("--output", "-o", choices=["table", "json"], default="table")
    p.set_defaults(run=cmd_redrive)

    # `prefetcher local ...` goes to the local stack of a clone (prefetcher_cli/local.py; main
    # hands it the arguments before parsing): listed here for --help.
    p = sub.add_parser("local", add_help=False, help="the local stack (a development tool of the repository)")
    p.add_argument("args", nargs=argparse.REMAINDER, help="invoke FUNCTION --event FILE | demo [--real-pulls]")
    return top


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["local"]:
        from prefetcher_cli import local

        return local.run(argv[1:])
    args = parser().parse_args(argv)
    try:
        code: int = args.run(args)
        return code
    except reports.UsageError as error:
        print(f"prefetcher: {error}", file=sys.stderr)
        return EXIT_USAGE
    except ImageNotFoundError as error:
        print(f"prefetcher: {error}", file=sys.stderr)
        return EXIT_NOT_FOUND
    except (TableNotFoundError, EndpointUnreachableError) as error:
        print(f"prefetcher: {error}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except NoCredentialsError:
        print("prefetcher: no AWS credentials found (set AWS_PROFILE or configure credentials)", file=sys.stderr)
        return EXIT_UNREACHABLE
    except NoRegionError:
        print("prefetcher: no AWS region set (set AWS_REGION or AWS_DEFAULT_REGION)", file=sys.stderr)
        return EXIT_UNREACHABLE
    except ClientError as error:
        info = error.response.get("Error", {})
        print(f"prefetcher: AWS refused the request: {info.get('Code')}: {info.get('Message')}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except BotoCoreError as error:
        print(f"prefetcher: {error}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except PrefetcherError as error:
        print(f"prefetcher: {error}", file=sys.stderr)
        return EXIT_USAGE
    except FileNotFoundError as error:
        print(f"prefetcher: {error.strerror}: {error.filename}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("prefetcher: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
