"""Docs live in the repository: nothing a user reads points outside it.

The design and its invariants are ``docs/design.md`` (invariants numbered 1-14);
code, tests, examples, tools and docs cite that page ("invariant 3"), never a
document that ships elsewhere.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: what a user reads (README.md and CHANGELOG.md are the lead's to join here)
CHECKED = (
    "src",
    "tests",
    "examples",
    "bench",
    "tools",
    "docs",
    "mkdocs.yml",
    "pyproject.toml",
    "README.md",
    "CHANGELOG.md",
)
#: installed or generated, not ours (tools/mermaid installs its npm packages here)
SKIPPED = ("__pycache__", "node_modules")
SUFFIXES = {".py", ".md", ".toml", ".yml", ".yaml", ".txt", ".json", ".mako", ".cfg"}
# spelled in pieces so this file does not match itself
OUTSIDE = (
    "DESIGN" + ".md",
    "\u00a7",  # the section sign
    ".." + "/shared",
    "/work" + "/shared",
)


def _files() -> list[Path]:
    found: list[Path] = []
    for name in CHECKED:
        path = ROOT / name
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            found += [
                p
                for p in sorted(path.rglob("*"))
                if p.is_file() and p.suffix in SUFFIXES and not set(SKIPPED) & set(p.parts)
            ]
    return found


def test_the_check_reads_the_repository() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in _files()}
    assert "docs/design.md" in names
    assert "src/extension_fsm/invariants.py" in names
    assert len(names) > 100


@pytest.mark.parametrize("needle", OUTSIDE)
def test_nothing_cites_a_document_outside_the_repository(needle: str) -> None:
    hits = [
        f"{p.relative_to(ROOT)}:{n}"
        for p in _files()
        for n, line in enumerate(p.read_text(encoding="utf-8", errors="replace").splitlines(), 1)
        if needle in line
    ]
    assert hits == []


def test_the_design_page_numbers_the_invariants_1_to_14() -> None:
    text = (ROOT / "docs" / "design.md").read_text(encoding="utf-8")
    section = text.split("## Invariants", 1)[1].split("\n## ", 1)[0]
    numbers = [int(n) for n in re.findall(r"^(\d+)\. \*\*", section, flags=re.M)]
    assert numbers == list(range(1, 15))
