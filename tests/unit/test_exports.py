"""The public surface is exactly ``__all__`` (httpx's rule)."""

from __future__ import annotations

from types import ModuleType

import extension_fsm


def test_all_is_exactly_the_public_names() -> None:
    # Submodules show up in the package namespace once anything imports them.
    public = {
        name
        for name, value in vars(extension_fsm).items()
        if not name.startswith("_") and not isinstance(value, ModuleType)
    }
    public -= {"annotations"}  # the __future__ feature
    assert set(extension_fsm.__all__) - {"__version__"} == public
    assert sorted(extension_fsm.__all__) == list(extension_fsm.__all__)


def test_the_host_facing_names_are_exported() -> None:
    for name in ("ExtensionService", "ExtensionError", "ExtensionStatus", "SessionStatus"):
        assert name in extension_fsm.__all__
    assert extension_fsm.TimeoutAction.parse("nonsense") is extension_fsm.TimeoutAction.AUTO_APPROVE
