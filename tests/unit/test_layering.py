"""The operator CLI and the local stack depend one way: the dev tools use the CLI's query and
formatting modules; the CLI never imports the dev tools, and nothing imports `prefetcher_cli.main`
back (the import cycle the demo once made)."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers import ROOT


def loaded_after_importing(module: str) -> set[str]:
    """The modules a fresh interpreter holds after importing `module` (from the repository)."""
    code = f"import sys, {module}; print('\\n'.join(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True, timeout=120
    )
    return set(result.stdout.split())


def test_the_cli_imports_nothing_of_the_dev_tools():
    # Given the operator CLI, run from a clone where the dev tools are importable
    # When its entry module is imported
    loaded = loaded_after_importing("prefetcher_cli.main")
    # Then no module of devtools is loaded
    assert not {name for name in loaded if name.split(".")[0] == "devtools"}


def test_the_demo_prints_through_the_query_and_formatting_modules_not_through_main():
    # Given the local stack's demo
    # When it is imported
    loaded = loaded_after_importing("devtools.local_stack.demo")
    # Then it holds the CLI's query and formatting modules, and not the CLI's entry (no cycle)
    assert {"prefetcher_cli.reports", "prefetcher_cli.output"} <= loaded
    assert "prefetcher_cli.main" not in loaded
