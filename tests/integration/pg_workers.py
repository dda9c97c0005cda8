"""Worker threads for PostgreSQL races: each runs its own event loop, engine,
connections and ``ExtensionService``; ``race`` releases calls on several
workers together with a barrier.  Shared by the race test files."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import Future
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from extension_fsm import ExtensionService
from extension_fsm.adapters.config import StaticConfig
from extension_fsm.adapters.memory import (
    MemoryPresence,
    MemoryPush,
    MemorySessionTimer,
    MemorySockets,
)
from extension_fsm.adapters.sqlalchemy import SqlAlchemyStore
from extension_fsm.errors import ExtensionError
from extension_fsm.simulator import make_payment, make_session

T0 = datetime(2026, 1, 1, tzinfo=UTC)
TIMEOUT = 10
T = TypeVar("T")


class FixedClock:
    """A worker's wall clock, set per trial (workers may disagree, as real ones do)."""

    def __init__(self) -> None:
        self.at = T0

    def now(self) -> datetime:
        return self.at


class Worker:
    """A thread running its own event loop, store and service."""

    def __init__(self, url: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.clock = FixedClock()
        self.config = StaticConfig(timeout_seconds=TIMEOUT)
        self.presence = MemoryPresence()
        self.sockets = MemorySockets()
        self.store: SqlAlchemyStore = self.run(SqlAlchemyStore.open(url, clock="local"))
        self.service = ExtensionService(
            self.store,
            clock=self.clock,
            config=self.config,
            sockets=self.sockets,
            presence=self.presence,
            push=MemoryPush(),
            session_timer=MemorySessionTimer(),
        )

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.submit(coro).result(timeout=60)

    def close(self) -> None:
        # Background deliveries end before the store; a generous grace, because a
        # delivery cancelled while its connection is being opened leaks that socket.
        self.run(self.service.aclose(grace=30))
        self.run(self.store.aclose())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


def race(
    a: Worker, b: Worker, first: Callable[[], Awaitable[T]], second: Callable[[], Awaitable[T]]
) -> list[T | ExtensionError]:
    """Run both calls at once (a barrier releases them together); results or refusals."""
    return race_all([(a, first), (b, second)])


async def seed(w: Worker, trial: str, *, sessions: int = 1, payments: int = 1) -> None:
    for n in range(sessions):
        await w.store.seed_session(
            make_session(
                f"{trial}s{n}", customer_id=f"{trial}c", expires_at=T0 + timedelta(hours=1)
            )
        )
    for n in range(payments):
        await w.store.seed_payment(make_payment(f"{trial}p{n}", customer_id=f"{trial}c"))


def race_all(calls: list[tuple[Worker, Callable[[], Awaitable[T]]]]) -> list[T | ExtensionError]:
    """Run each call on its worker at once (one barrier releases them all)."""
    barrier = threading.Barrier(len(calls))

    async def go(call: Callable[[], Awaitable[T]]) -> T | ExtensionError:
        barrier.wait(timeout=30)
        try:
            return await call()
        except ExtensionError as err:
            return err

    futures = [w.submit(go(call)) for w, call in calls]
    return [f.result(timeout=60) for f in futures]
