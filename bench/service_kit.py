"""The library side of the durable cases: an ``ExtensionService`` over the SQL
adapter with delivery ports that do nothing, and the adapter's own schema."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from extension_fsm.adapters.clock import SystemClock
from extension_fsm.adapters.config import StaticConfig
from extension_fsm.adapters.sqlalchemy import SqlAlchemyStore
from extension_fsm.outbox import DispatchReport, OutboxDispatcher
from extension_fsm.service import ExtensionService

from .fakes import CountingPush, NullPresence, NullSessionTimer, NullSockets


class DeferredDispatcher(OutboxDispatcher):
    """Leaves committed outbox rows to the background dispatch pass.

    The durable cases time the deciding transaction (the raw baselines write
    the same outbox rows and deliver none of them); delivery is timed on its
    own by the outbox case.
    """

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
) -> ExtensionService:
    """A service over ``store``; ids it mints start with ``id_prefix``."""
    clock = SystemClock()
    counter = itertools.count()
    ports = {
        "sockets": NullSockets(),
        "push": CountingPush(),
        "session_timer": NullSessionTimer(),
    }
    dispatcher_cls = OutboxDispatcher if deliver else DeferredDispatcher
    dispatcher = dispatcher_cls(store.outbox, clock=clock, **ports)  # type: ignore[arg-type]
    return ExtensionService(
        store,
        clock=clock,
        config=StaticConfig(timeout_action=action),
        presence=NullPresence(),
        dispatcher=dispatcher,
        new_id=lambda: f"{id_prefix}{next(counter)}",
        sweep_batch=sweep_batch,
        sweep_spread=sweep_spread,
        **ports,  # type: ignore[arg-type]
    )


async def open_store(url: str) -> SqlAlchemyStore:
    """The adapter's store with its own tables created (the raw code writes these too)."""
    return await SqlAlchemyStore.open(url, create_schema=True, clock="local")
