"""The library side of the durable cases: an ``ExtensionService`` over the SQL
adapter, opened through its public API only (``SqlAlchemyStore.open`` with a
URL, or with the host's ``AsyncEngine`` where the store takes one)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine

from extension_fsm.adapters.clock import SystemClock
from extension_fsm.adapters.config import StaticConfig
from extension_fsm.adapters.sqlalchemy import SqlAlchemyStore
from extension_fsm.outbox import DispatchReport, OutboxDispatcher
from extension_fsm.ports import Scheduler
from extension_fsm.service import ExtensionService

from .fakes import CountingPush, NullPresence, NullSessionTimer, NullSockets


class DeferredDispatcher(OutboxDispatcher):
    """Leaves committed outbox rows undelivered, as the raw baselines of the
    SQLite and round-trip cases do (they write the same rows and deliver none)."""

    async def deliver(self, ids: Sequence[str]) -> DispatchReport:
        return DispatchReport()


def make_service(
    store: SqlAlchemyStore,
    *,
    id_prefix: str = "x",
    action: str = "auto_reject",
    deliver: bool = False,
    sweep_batch: int = 100,
    sweep_spread: bool = False,
    timeout_seconds: int = 10,
    sockets: Any = None,
    presence: Any = None,
    push: Any = None,
    scheduler: Scheduler | None = None,
) -> ExtensionService:
    """A service over ``store``; ids it mints start with ``id_prefix``.

    ``deliver``: each call's outbox rows are delivered right after its commit
    (the service's own dispatcher, as a host runs it) to ``sockets`` / ``push``
    (default: nobody on a socket, a counting push); otherwise left undelivered.
    """
    clock = SystemClock()
    counter = itertools.count()
    ports = {
        "sockets": sockets or NullSockets(),
        "push": push or CountingPush(),
        "session_timer": NullSessionTimer(),
    }
    dispatcher = None
    if not deliver:
        dispatcher = DeferredDispatcher(store.outbox, clock=clock, **ports)
    return ExtensionService(
        store,
        clock=clock,
        config=StaticConfig(timeout_action=action, timeout_seconds=timeout_seconds),
        presence=presence or NullPresence(),
        dispatcher=dispatcher,
        scheduler=scheduler,
        new_id=lambda: f"{id_prefix}{next(counter)}",
        sweep_batch=sweep_batch,
        sweep_spread=sweep_spread,
        **ports,
    )


async def open_store(url: str) -> SqlAlchemyStore:
    """The adapter's store with its own tables created (the raw code writes these too)."""
    return await SqlAlchemyStore.open(url, create_schema=True, clock="local")


async def open_store_on(engine: AsyncEngine, url: str) -> tuple[SqlAlchemyStore, bool]:
    """The store on the host's ``engine`` where ``SqlAlchemyStore.open`` takes an
    ``AsyncEngine`` (0.3.0 on), else on ``url`` (its own engine); says which."""
    try:
        return await SqlAlchemyStore.open(engine, clock="local"), True  # type: ignore[arg-type]
    except (ArgumentError, TypeError):  # it refused the engine before connecting
        return await SqlAlchemyStore.open(url, clock="local"), False
