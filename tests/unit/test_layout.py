"""The package layout: the library never imports the simulator.

``extension_fsm.simulator`` (the timeline player, its scenario files and the
test harness) sits on top of the library; the library (everything else but the
``cli`` entry point, which serves both, and the host test kit
``extension_fsm.testing``, which drives its races through the simulator's
harness) must stay importable without it.  The
rule is checked by walking every module's ``import`` statements, relative ones
resolved, so a lazy import inside a function is caught too.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import extension_fsm

PACKAGE_DIR = Path(extension_fsm.__file__).resolve().parent
SIMULATOR = "extension_fsm.simulator"
#: may import the simulator: the simulator itself, the console entry point and
#: the host test kit (tools built on the simulator, never imported by the library)
ALLOWED = ("extension_fsm.simulator", "extension_fsm.cli", "extension_fsm.testing")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(source: str, module: str, *, is_package: bool = False) -> set[str]:
    """Every module ``source`` (the text of ``module``) imports, as absolute names."""
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            found.add(prefix)
            # ``from extension_fsm import simulator`` names a module too
            found.update(f"{prefix}.{alias.name}" for alias in node.names)
    return found


def imports_simulator(names: set[str]) -> list[str]:
    return sorted(n for n in names if n == SIMULATOR or n.startswith(SIMULATOR + "."))


def _allowed(name: str) -> bool:
    return any(name == a or name.startswith(a + ".") for a in ALLOWED)


def library_modules() -> list[Path]:
    """Every module but the simulator's and the console entry point (migrations too)."""
    return [p for p in sorted(PACKAGE_DIR.rglob("*.py")) if not _allowed(module_name(p))]


def test_no_library_module_imports_the_simulator() -> None:
    offenders = {}
    for path in library_modules():
        name = module_name(path)
        names = imported_modules(
            path.read_text(encoding="utf-8"), name, is_package=path.name == "__init__.py"
        )
        if bad := imports_simulator(names):
            offenders[name] = bad
    assert offenders == {}


def test_the_walk_covers_the_library() -> None:
    names = {module_name(p) for p in library_modules()}
    for expected in ("extension_fsm", "extension_fsm.errors", "extension_fsm.outbox"):
        assert expected in names
    assert "extension_fsm.adapters.memory" in names
    assert any(n.startswith("extension_fsm.migrations.") for n in names)
    assert not any(n.startswith(SIMULATOR) for n in names)


def test_the_walk_sees_every_spelling_of_a_simulator_import() -> None:
    # a control: each of these, written in a library module, must be caught
    for source in (
        "from .simulator import World",
        "from .simulator.timeline import run_scenario",
        "from . import simulator",
        "import extension_fsm.simulator.scenario",
        "from extension_fsm.simulator import make_session",
        "def later():\n    from ..simulator import World\n",
    ):
        module = "extension_fsm.adapters.memory" if ".." in source else "extension_fsm.service"
        assert imports_simulator(imported_modules(source, module)), source
    assert not imports_simulator(imported_modules("from .simulation_like import x", "a.b"))
    assert not imports_simulator(imported_modules("from .invariants import x", "extension_fsm.x"))


def test_the_harness_is_reachable_from_the_simulator_package() -> None:
    from extension_fsm import simulator

    assert {"World", "make_payment", "make_session"} <= set(simulator.__all__)
    from datetime import UTC, datetime

    session = simulator.make_session("s-layout", expires_at=datetime(2030, 1, 1, tzinfo=UTC))
    assert session.id == "s-layout"
    assert simulator.make_payment("p-layout").id == "p-layout"


def test_invariants_stay_in_the_library() -> None:
    from extension_fsm.invariants import check_invariants

    assert callable(check_invariants)
    assert (PACKAGE_DIR / "invariants.py").exists()


def test_every_public_name_imports() -> None:
    for name in extension_fsm.__all__:
        assert hasattr(extension_fsm, name), name


def test_model_and_ports_re_export_their_modules() -> None:
    # hosts import from ``extension_fsm.model`` and ``extension_fsm.ports``:
    # every public name of the modules behind them is there, the same object
    for package, modules in (
        ("extension_fsm.model", ("values", "entities", "events", "effects")),
        ("extension_fsm.ports", ("storage", "delivery", "runtime")),
    ):
        facade = importlib.import_module(package)
        seen: set[str] = set()
        for name in modules:
            module = importlib.import_module(f"{package}.{name}")
            for public in module.__all__:
                assert getattr(facade, public) is getattr(module, public), (package, public)
            seen.update(module.__all__)
        assert seen == set(facade.__all__), package
