"""Every Python block of the pages a new user copies from runs as written:
the README, the quickstart and the host guide."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = ["README.md", "docs/quickstart.md", "docs/host-guide.md"]
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def blocks() -> list[tuple[str, int, str]]:
    found = []
    for page in PAGES:
        for n, match in enumerate(_BLOCK.finditer((ROOT / page).read_text()), start=1):
            found.append((page, n, match.group(1)))
    return found


def test_the_pages_have_python_blocks() -> None:
    assert {page for page, _, _ in blocks()} == set(PAGES)


@pytest.mark.parametrize(("page", "n", "code"), blocks(), ids=lambda v: str(v)[:20])
def test_python_block_runs(page: str, n: int, code: str, tmp_path: Path) -> None:
    # A fresh interpreter per block, as a user pasting it into a file would run it.
    script = tmp_path / f"block{n}.py"
    script.write_text(code)
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"{page} block {n} failed:\n{done.stderr}"
