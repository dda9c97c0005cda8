"""The core imports nothing of the shell (adapters, service, simulator), and
no library module generates code."""

from __future__ import annotations

import ast
from pathlib import Path

import extension_fsm

PACKAGE = Path(extension_fsm.__file__).parent
CORE = PACKAGE / "core"
SHELL = ("adapters", "service", "outbox", "simulator", "timeline", "simulation", "scenario")


def _modules() -> list[Path]:
    return sorted(CORE.glob("*.py"))


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
