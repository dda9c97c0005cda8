"""The one background loop the sweep, the worker and the outbox dispatcher share.

:func:`run_every` runs a step again and again: at once after a busy step
(there may be more to do), otherwise after ``interval`` seconds or as soon as
``wake`` is set.  A step that raises is logged and the loop goes on (a flaky
database must not end it).  It returns when ``stop`` is set; cancel the task
to stop it at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

__all__ = ["run_every"]

_log = logging.getLogger("extension_fsm.loop")


async def run_every(
    name: str,
    step: Callable[[], Awaitable[bool]],
    interval: float,
    *,
    stop: asyncio.Event | None = None,
    wake: asyncio.Event | None = None,
    log: logging.Logger = _log,
) -> None:
    """Run ``step`` until ``stop`` is set (or the task is cancelled).

    ``step`` returns whether it was busy: ``True`` runs it again at once,
    ``False`` waits ``interval`` seconds (or until ``wake`` or ``stop`` is
    set) first.  An exception from ``step`` is logged on ``log`` as
    ``"<name> pass failed"`` and counts as not busy.
    """
    stop = stop if stop is not None else asyncio.Event()
    while not stop.is_set():
        busy = False
        try:
            busy = await step()
        except Exception:  # a flaky database or adapter must not end the loop
            log.exception("%s pass failed", name, extra={"fields": {"loop": name}})
        if busy:
            continue
        waits = [asyncio.ensure_future(stop.wait())]
        if wake is not None:
            waits.append(asyncio.ensure_future(wake.wait()))
        try:
            await asyncio.wait(waits, timeout=interval, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
        if wake is not None:
            wake.clear()
