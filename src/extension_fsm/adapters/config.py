"""Configuration held in the process: :class:`StaticConfig`.

The :class:`~extension_fsm.ports.ConfigSource` a host uses when its settings
are fixed at start (the ``extension-fsm worker`` builds one from its flags)
or changed by assignment in tests and the simulator.  Each call reads the
current values, so an assignment applies to the next call.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..model import DEFAULT_STALE_AFTER_SECONDS, TimeoutAction

__all__ = ["StaticConfig"]


@dataclass
class StaticConfig:
    """Settings given as values; change a field to change the next call's."""

    timeout_seconds: int = 10
    timeout_action: TimeoutAction | str = TimeoutAction.AUTO_APPROVE
    grace_seconds: int = 60
    #: a timeout handled later than this past its deadline never auto-approves
    stale_after_seconds: float = DEFAULT_STALE_AFTER_SECONDS

    async def extension_timeout_seconds(self) -> int:
        return self.timeout_seconds

    async def extension_timeout_action(self) -> TimeoutAction | str:
        return self.timeout_action

    async def closure_grace_seconds(self) -> int:
        return self.grace_seconds

    async def extension_stale_after_seconds(self) -> float:
        return self.stale_after_seconds
