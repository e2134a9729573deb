"""`prefetcher`: ask the audit table which nodes hold an image, what failed and why, how covered a
cluster is; ask for a fleet check now (`verify`); move a dead-letter queue's messages back.
(`prefetcher local ...` runs the local stack of a clone of the repository: prefetcher_cli/local.py.)

Exit codes: 0 done; 1 not found (unknown image, node or cluster); 2 usage; 3 the table or the
endpoint cannot be reached (or credentials are missing). `prefetcher wait`: 0 warm; 1 timed out;
4 cannot be reached (too many nodes failed for good); 5 the tag moved to a newer digest."""

from __future__ import annotations

import argparse
import math
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
from rich.console import RenderableType

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
    text: Callable[[dict[str, Any]], RenderableType],
) -> int:
    view = build(AuditTable(resolve_table(args)))
    if args.output == "json":
        print(output.as_json(view))
    else:
        output.show(text(view))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    if args.interval is not None and not args.watch:
        raise reports.UsageError("--interval goes with --watch")
    if not args.watch:
        return _query(args, lambda t: reports.status(t, args.image), output.status)
    from prefetcher_cli import watch

    reports.parse_image(args.image)  # a bad name is a usage error at once, not something to wait for
    table = AuditTable(resolve_table(args))
    watch.watch(
        lambda: reports.status(table, args.image),
        image=args.image,
        json_output=args.output == "json",
        interval=watch.DEFAULT_INTERVAL if args.interval is None else args.interval,
    )
    return 0


def cmd_node(args: argparse.Namespace) -> int:
    return _query(args, lambda t: reports.node(t, args.instance_id), output.node)


def cmd_coverage(args: argparse.Namespace) -> int:
    return _query(args, lambda t: reports.coverage(t, args.cluster), output.coverage)


def cmd_failures(args: argparse.Namespace) -> int:
    since = reports.parse_duration(args.since)
    return _query(args, lambda t: reports.failures(t, since, args.cluster), output.failures)


def cmd_wait(args: argparse.Namespace) -> int:
    from prefetcher_cli import progress, wait

    repository, tag, digest = reports.parse_image(args.image)
    if not 0 < args.coverage <= 100:
        raise reports.UsageError(f"--coverage {args.coverage:g}: give a percentage above 0 and at most 100")
    timeout = reports.parse_duration(args.timeout).total_seconds()
    interval = reports.parse_duration(args.interval).total_seconds()
    if interval < wait.MIN_INTERVAL_SECONDS:
        raise reports.UsageError(f"--interval {args.interval}: at least {wait.MIN_INTERVAL_SECONDS:g}s")
    target = wait.Target(
        args.image, repository, tag, digest, args.coverage, clusters=sorted(set(args.cluster or [])),
        chosen=bool(args.cluster),
    )  # fmt: skip
    table = AuditTable(resolve_table(args))
    as_json = args.output == "json"
    shown = progress.display(sys.stderr if as_json else sys.stdout, args.timeout)
    outcome, snapshot = wait.run(table, target, shown, timeout=timeout, interval=interval)
    if as_json:
        print(output.as_json({"outcome": outcome.name.lower(), "exit_code": int(outcome), **snapshot.as_dict()}))
    return int(outcome)


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
        output.show(output.redriven(view))
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
        output.show(output.verified(view))
    return 0


def _interval(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 1 <= seconds < math.inf:  # also rejects nan
        raise argparse.ArgumentTypeError(f"{text!r}: at least 1 second")
    return seconds


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
    p.add_argument(
        "--watch",
        action="store_true",
        help="show it again every interval until no node is requested, in-progress or unknown (sent again), "
        "or Ctrl-C; waits for an image not recorded yet; in place on a terminal, else once per change; "
        "with --output json, the final view once",
    )
    p.add_argument(
        "--interval",
        type=_interval,
        metavar="SECONDS",
        help="with --watch: seconds between reads (default 5, at least 1)",
    )
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

    p = sub.add_parser(
        "wait",
        parents=[common],
        help="wait until enough live nodes of each cluster hold an image (exit 0), or say why not",
        description="Wait until, in each cluster, at least --coverage percent of the live nodes hold the "
        "image's digest (cached or present). Reads the audit table only (a GetItem and two Queries per cluster "
        "a poll). Exit 0 warm; 1 timed out; 4 cannot be reached (too many nodes failed for good); 5 the tag "
        "moved to a newer digest. Name the image by digest (repository:tag@sha256:...) right after a push: a "
        "tag alone is read as the digest the table holds for it when the wait starts.",
    )
    p.add_argument("image", help="repository:tag, repository@sha256:<digest> or repository:tag@sha256:<digest>")
    p.add_argument(
        "--cluster", action="append", help="a cluster to wait for (repeat; default: every cluster the push targeted)"
    )
    p.add_argument("--coverage", type=float, default=100.0, help="percent of live nodes (default 100)")
    p.add_argument("--timeout", default="30m", help="give up after this long (30s, 30m, 2h; default 30m)")
    p.add_argument("--interval", default="15s", help="between polls (default 15s, at least 5s)")
    p.set_defaults(run=cmd_wait)

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
