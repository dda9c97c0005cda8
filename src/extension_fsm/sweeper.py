"""Run the sweep and the outbox dispatcher in the background of a host."""

from __future__ import annotations

import asyncio
import logging

from .service import ExtensionService

__all__ = ["run_sweeper"]

_log = logging.getLogger("extension_fsm.sweeper")


async def run_sweeper(service: ExtensionService, interval: float = 1.0) -> None:
    """Every ``interval`` seconds: resolve due extensions, then deliver due outbox rows.

    Run one per worker (any number of workers is safe); cancel the task to
    stop.  This is what makes deadlines survive restarts and lost timers: no
    extension stays pending longer than its deadline plus ``interval``.
    """
    while True:
        try:
            await service.sweep_due()
            await service.dispatcher.dispatch_due()
        except Exception:  # a flaky database must not kill the loop
            _log.exception("sweep pass failed")
        await asyncio.sleep(interval)
