"""The core reads as plain code: a package of small modules, one per event,
that imports nothing of the shell (adapters, service, simulator)."""

from __future__ import annotations

import ast
from pathlib import Path

import extension_fsm
from extension_fsm import core

PACKAGE = Path(extension_fsm.__file__).parent
CORE = PACKAGE / "core"
SHELL = ("adapters", "service", "outbox", "simulator", "timeline", "simulation", "scenario")


def _modules() -> list[Path]:
    return sorted(CORE.glob("*.py"))


def test_core_is_a_package_of_small_modules() -> None:
    names = {path.stem for path in _modules()}
    assert {"request", "answer", "timeout", "end", "outcomes", "snapshot"} <= names
    for path in _modules():
        lines = path.read_text(encoding="utf-8").count("\n")
        assert lines < 400, f"{path.name}: {lines} lines"


def test_core_imports_nothing_of_the_shell() -> None:
    for path in _modules():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert node.module.split(".")[0] not in SHELL, (path.name, node.module)


def test_no_generated_code_in_the_library() -> None:
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id not in ("exec", "eval"), path
            if isinstance(node, ast.Attribute) and node.attr == "__class__":
                assert not isinstance(node.ctx, ast.Store), path


def test_the_public_names_stay_importable() -> None:
    for name in (
        "decide",
        "Snapshot",
        "Change",
        "Decision",
        "NOTHING",
        "Undecidable",
        "MAX_DURATION_MINUTES",
        "MIN_DURATION_MINUTES",
    ):
        assert hasattr(core, name), name
