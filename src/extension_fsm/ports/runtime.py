"""What the shell reads at run time besides the rows: the clock, an
in-process scheduler and the host's configuration."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Protocol

from ..model import TimeoutAction

__all__ = ["Clock", "ConfigSource", "Scheduler", "TimerHandle"]


class Clock(Protocol):
    """Wall-clock time, always timezone-aware UTC."""

    def now(self) -> datetime: ...


class TimerHandle(Protocol):
    """A scheduled callback that can be cancelled."""

    def cancel(self) -> None: ...


class Scheduler(Protocol):
    """Runs a coroutine function at a moment (an in-process fast path only)."""

    def call_at(self, when: datetime, callback: Callable[[], Awaitable[None]]) -> TimerHandle: ...


class ConfigSource(Protocol):
    """Run-time configuration, read when needed (the seed's ``config.service``)."""

    async def extension_timeout_seconds(self) -> int: ...

    async def extension_timeout_action(self) -> TimeoutAction | str:
        """Any value; unknown ones mean ``auto_approve``."""
        ...

    async def closure_grace_seconds(self) -> int: ...
