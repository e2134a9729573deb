"""Package size: what `sam build` produces (the layer and the three functions), unzipped."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.common import ROOT, main_of, save

SAM = ROOT / ".venv-sam" / "bin" / "sam"


def size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def run() -> dict[str, Any]:
    build = Path(tempfile.mkdtemp(prefix="prefetch-build-"))
    try:
        python = shutil.which("python3.13")
        path = os.environ["PATH"] if python else f"{Path(sys.executable).parent}:{os.environ['PATH']}"
        subprocess.run(
            [str(SAM), "build", "--build-dir", str(build / "out"), "--cache-dir", str(build / "cache")],
            cwd=ROOT, check=True, capture_output=True, env={**os.environ, "SAM_CLI_TELEMETRY": "0", "PATH": path},
        )  # fmt: skip
        parts = {p.name: size(p) for p in (build / "out").iterdir() if p.is_dir()}
        layer = build / "out" / "PrefetcherLayer" / "python"
        biggest = sorted(((size(p), p.name) for p in layer.iterdir() if p.is_dir()), reverse=True)[:8]
    finally:
        shutil.rmtree(build, ignore_errors=True)
    total = sum(parts.values())
    figures = {"package_mb": round(total / 1e6, 2)}
    details = {
        "parts_mb": {name: round(b / 1e6, 3) for name, b in sorted(parts.items())},
        "layer_biggest_mb": {name: round(b / 1e6, 2) for b, name in biggest},
    }
    save("package_size", figures, details)
    return {**figures, **details}


main = main_of(run)


if __name__ == "__main__":
    sys.exit(main())
