"""`python -m devtools.local_stack invoke|demo`: the local stack's commands (what `make demo`,
`make invoke` and, from a clone, `prefetcher local ...` run).

Exit codes: 0 done; 1 the function failed (invoke); 2 usage (a bad argument, a missing file, a
parameter the template refuses, a missing dev tool); 130 interrupted."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

EXIT_USAGE = 2
# The dev extra's modules the local stack needs (moto[server], google-re2, policy_sentry).
DEV_MODULES = ("moto", "re2", "policy_sentry")


def parser(prog: str | None = None) -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog=prog, description="The local stack (DynamoDB Local + moto): invoke a function, run the demo."
    )
    sub = top.add_subparsers(dest="command", required=True)
    p = sub.add_parser("invoke", help="run one function as `sam local invoke` would, against a fresh local stack")
    p.add_argument("function", help="logical id in template.yaml, e.g. ImagePushFunction")
    p.add_argument("--event", "-e", required=True, help="event file (e.g. events/ecr-push-tagged.json), or - for stdin")
    p.add_argument(
        "--parameter-overrides",
        nargs="*",
        help="template parameters, Key=Value (default: samconfig.toml's local_invoke ones)",
    )
    p = sub.add_parser("demo", help="the whole flow on a simulated fleet (what `make demo` runs)")
    p.add_argument(
        "--real-pulls",
        choices=["auto", "yes", "no"],
        default="auto",
        help="run the node agent against a local containerd and registry (needs root; auto: when possible)",
    )
    return top


def missing_dev_modules() -> list[str]:
    import importlib.util

    return [name for name in DEV_MODULES if importlib.util.find_spec(name) is None]


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    args = parser(prog).parse_args(argv)
    missing = missing_dev_modules()
    if missing:
        print(
            f"{parser(prog).prog}: the local stack needs the dev extra (missing {', '.join(missing)}): "
            "run `make install` in the repository (it installs `.[dev]` into .venv)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    from devtools.local_stack.servers import LocalStackError

    try:
        if args.command == "invoke":
            from devtools.local_stack.invoke import invoke_command

            return invoke_command(args.function, args.event, args.parameter_overrides)
        from devtools.local_stack.demo import run_demo

        return run_demo(real_pulls=args.real_pulls)
    except (LocalStackError, ValueError) as error:
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
