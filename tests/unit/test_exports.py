"""The public surface is exactly ``__all__`` (httpx's rule)."""

from __future__ import annotations

from types import ModuleType

import extension_fsm


def test_all_is_exactly_the_public_names() -> None:
    public = {name for name in vars(extension_fsm) if not name.startswith("_")}
    # Submodules become package attributes once anything imports them (the CLI's
    # scenario/timeline/diagram modules, invariants, ...): they are not exports.
    modules = {n for n, v in vars(extension_fsm).items() if isinstance(v, ModuleType)}
    modules |= {"annotations"}
    assert set(extension_fsm.__all__) - {"__version__"} == public - modules
    assert sorted(extension_fsm.__all__) == list(extension_fsm.__all__)


def test_the_host_facing_names_are_exported() -> None:
    for name in ("ExtensionService", "ExtensionError", "ExtensionStatus", "SessionStatus"):
        assert name in extension_fsm.__all__
    assert extension_fsm.TimeoutAction.parse("nonsense") is extension_fsm.TimeoutAction.AUTO_APPROVE
