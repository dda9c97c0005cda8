"""What the shell reads at run time besides the rows: the clock, an
in-process scheduler and the host's configuration."""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Protocol

from ..model import DEFAULT_STALE_AFTER_SECONDS, TimeoutAction

__all__ = ["Clock", "ConfigSource", "Scheduler", "TimerHandle", "stale_after_seconds"]

_log = logging.getLogger("extension_fsm.config")


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

    # Optional: ``async def extension_stale_after_seconds(self) -> float``, how
    # late past its deadline a timeout may be handled and still auto-approve
    # (see :func:`stale_after_seconds`; 60 when a config does not have it).


async def stale_after_seconds(config: ConfigSource) -> float:
    """The stale-deadline bound ``config`` sets, in seconds.

    A config without ``extension_stale_after_seconds()`` (written before the
    bound existed) gets the default, 60.  A value that is not a finite number
    of seconds >= 0 is taken as 0 (with a warning): a doubtful bound never
    lets a late deadline charge.
    """
    read = getattr(config, "extension_stale_after_seconds", None)
    if read is None:
        return DEFAULT_STALE_AFTER_SECONDS
    value = await read()
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = math.nan
    if isinstance(value, bool) or not math.isfinite(seconds) or seconds < 0:
        _log.warning("extension_stale_after_seconds %r is not seconds >= 0: using 0", value)
        return 0.0
    return seconds
