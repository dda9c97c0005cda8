"""Every runnable Python block of the docs runs as written, and prints what
the page says it prints.

The convention, on every page (``README.md``, ``docs/*.md``, the example's
README):

- a ```` ```python ```` block is a program: it runs in a fresh interpreter
  (as a user pasting it into a file would run it), exits 0 and writes nothing
  on stderr (no warning, no logged traceback);
- a ```` ```text output ```` block after it is what it prints: the program's
  stdout must be exactly that text;
- a ```` ```python excerpt ```` block is a fragment of a larger program,
  shown to be read, not run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted(
    [ROOT / "README.md", ROOT / "examples" / "fastapi_app" / "README.md", *ROOT.glob("docs/*.md")]
)
_FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```", re.S | re.M)


def fences(page: Path) -> list[tuple[str, str]]:
    """``(info string, body)`` of every fenced block of ``page``, in order."""
    return [(m.group(1).strip(), m.group(2)) for m in _FENCE.finditer(page.read_text())]


def programs() -> list[tuple[str, int, str, str | None]]:
    """``(page, n, code, expected stdout or None)`` of every runnable block."""
    found: list[tuple[str, int, str, str | None]] = []
    for page in PAGES:
        name = str(page.relative_to(ROOT))
        blocks = fences(page)
        for i, (info, body) in enumerate(blocks):
            if info != "python":
                continue
            after = blocks[i + 1] if i + 1 < len(blocks) else None
            output = after[1] if after is not None and after[0] == "text output" else None
            found.append((name, len(found) + 1, body, output))
    return found


def test_the_pages_a_new_user_copies_have_programs_that_show_output() -> None:
    shown = {page for page, _, _, output in programs() if output is not None}
    assert {"README.md", "docs/quickstart.md"} <= shown


def test_every_output_block_follows_a_program() -> None:
    for page in PAGES:
        blocks = fences(page)
        for i, (info, _) in enumerate(blocks):
            if info == "text output":
                assert i > 0 and blocks[i - 1][0] == "python", f"{page}: output of no program"


def test_every_python_block_is_a_program_or_an_excerpt() -> None:
    for page in PAGES:
        for info, _ in fences(page):
            if info.split()[:1] == ["python"]:
                assert info in ("python", "python excerpt"), f"{page}: ```{info}"


@pytest.mark.parametrize(
    ("page", "n", "code", "output"), programs(), ids=lambda v: str(v).split("\n")[0][:24]
)
def test_python_block_prints_what_the_page_shows(
    page: str, n: int, code: str, output: str | None, tmp_path: Path
) -> None:
    script = tmp_path / f"block{n}.py"
    script.write_text(code)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"{page} block {n} failed:\n{done.stderr}"
    assert done.stderr == "", f"{page} block {n} wrote on stderr:\n{done.stderr}"
    if output is not None:
        assert done.stdout == output, f"{page} block {n} printed:\n{done.stdout}"
