"""Run pytest on a module in its own process, as a host runs the kit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_pytest(target: Path, *args: str, env: dict[str, str] | None = None) -> str:
    """``exit <code>`` then pytest's report (every outcome listed, ``-rA``)."""
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", str(target), "-q", "-rA", "-p", "no:cacheprovider", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    return f"exit {proc.returncode}\n{proc.stdout}{proc.stderr}"


def failed(report: str) -> set[str]:
    """The test ids a report lists as failed, without the module path."""
    return {
        line.split()[1].split("::", 1)[1]
        for line in report.splitlines()
        if line.startswith(("FAILED ", "ERROR "))
    }
