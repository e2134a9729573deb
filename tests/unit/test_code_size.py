"""Issue 11's bound on concentration, kept: no module of the layer or the CLI over 300 lines, no
class over 150 (the audit store was one 783-line module with a 587-line class before it was split
by aggregate)."""

from __future__ import annotations

import ast

from tests.helpers import ROOT

PACKAGES = [ROOT / "layers" / "prefetcher" / "prefetcher", ROOT / "cli" / "prefetcher_cli"]
MODULE_LINES = 300
CLASS_LINES = 150


def test_no_module_of_the_layer_or_the_cli_is_over_300_lines_nor_any_class_over_150():
    # Given every module of the layer package and of the operator CLI
    modules = [path for package in PACKAGES for path in sorted(package.rglob("*.py"))]
    assert len(modules) > 20
    # When their lines and their classes' lines are counted
    long_modules, long_classes = [], []
    for path in modules:
        source = path.read_text()
        if len(source.splitlines()) > MODULE_LINES:
            long_modules.append(f"{path.relative_to(ROOT)}: {len(source.splitlines())} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ClassDef) and (node.end_lineno or 0) - node.lineno + 1 > CLASS_LINES:
                long_classes.append(f"{path.relative_to(ROOT)}: class {node.name}")
    # Then none is over its bound
    assert not long_modules, long_modules
    assert not long_classes, long_classes
