"""Copy agent/prefetch.sh into the SSM document in template.yaml (between the BEGIN/END lines).

The script is edited and shellchecked as a file; the template carries it as one YAML block
scalar, which YAML loads back byte for byte (tests/unit/test_document.py checks both ways).
Run through `make document`; `--check` exits 1 if the template is out of date.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "template.yaml"
SCRIPT = ROOT / "agent" / "prefetch.sh"
BEGIN = "# BEGIN agent/prefetch.sh"
END = "# END agent/prefetch.sh"


def render(template: str, script: str) -> str:
    lines = template.split("\n")
    begin = next(i for i, line in enumerate(lines) if line.strip().startswith(BEGIN))
    end = next(i for i, line in enumerate(lines) if line.strip().startswith(END))
    indent = lines[begin][: len(lines[begin]) - len(lines[begin].lstrip())]
    if not script.endswith("\n") or script.endswith("\n\n"):
        raise SystemExit("agent/prefetch.sh must end with exactly one newline")
    if "\t" in script:
        raise SystemExit("agent/prefetch.sh must not contain tabs (YAML block scalars)")
    body = [f"{indent}- |"] + [f"{indent}  {line}" if line else "" for line in script[:-1].split("\n")]
    return "\n".join([*lines[: begin + 1], *body, *lines[end:]])


def main() -> int:
    template = TEMPLATE.read_text()
    rendered = render(template, SCRIPT.read_text())
    if "--check" in sys.argv:
        if rendered != template:
            print("template.yaml is out of date with agent/prefetch.sh: run `make document`", file=sys.stderr)
            return 1
        return 0
    if rendered != template:
        TEMPLATE.write_text(rendered)
        print("template.yaml: SSM document script updated from agent/prefetch.sh")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
