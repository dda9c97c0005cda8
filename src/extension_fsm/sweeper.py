"""Run the sweep and the outbox dispatcher in the background of a host.

Two independent loops: the sweep (deadlines) never waits on a delivery, and a
sweep pass that fails never stops the outbox from being delivered.
"""

from __future__ import annotations

import asyncio
import logging

from .loop import run_every
from .service import ExtensionService

__all__ = ["run_dispatcher", "run_sweep", "run_sweeper"]

_log = logging.getLogger("extension_fsm.sweeper")


async def run_sweep(service: ExtensionService, interval: float = 1.0) -> None:
    """Every ``interval`` seconds: resolve due extensions (cancel the task to stop).

    Each pass only decides and commits; its notifications go to background
    delivery, so a slow push provider or socket layer never delays a deadline.
    A failed pass is logged and the next one runs ``interval`` later.
    """

    async def sweep() -> bool:
        await service.sweep_due()
        return False  # sweep_due drains every due batch

    await run_every("sweep", sweep, interval, log=_log)


async def run_dispatcher(service: ExtensionService, interval: float = 1.0) -> None:
    """Deliver due outbox rows (left over, or up for retry) every ``interval``
    seconds, at once again while passes come back full (cancel the task to stop)."""
    await service.dispatcher.run(interval)


async def run_sweeper(service: ExtensionService, interval: float = 1.0) -> None:
    """Run :func:`run_sweep` and :func:`run_dispatcher` side by side until cancelled.

    Run one per worker (any number of workers is safe); cancel the task to
    stop both loops (``await service.aclose()`` at shutdown stops the
    background deliveries of calls).  This is what makes deadlines survive restarts
    and lost timers: no extension stays pending longer than its deadline plus
    ``interval``, however slow delivery is.
    """
    async with asyncio.TaskGroup() as group:
        group.create_task(run_sweep(service, interval), name="extension_fsm.sweep")
        group.create_task(run_dispatcher(service, interval), name="extension_fsm.dispatch")
