"""An event loop on virtual time and a store wrapper that makes units of work
overlap: what the race machine runs on, usable by a host's own tests too.

``YieldingStore`` wraps any store so that every call of its unit of work
(each joined read, the decision write, a set-aside, the commit) yields to the
event loop first: an in-memory store alone never
suspends, so ``asyncio.gather`` would run calls one after another and a race
would never interleave inside a unit of work.  With the wrapper, units of
work really overlap, as they do on a database.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Collection, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Self

from ..core import Change
from ..model import Extension, LedgerEntry, PaymentSession, Session, TransitionRecord
from ..ports import DecisionWriter, InspectableStore, OutboxMessage, StoreDump, UnitOfWork

__all__ = ["VirtualTimeLoop", "YieldingStore"]


class _YieldingProxy:
    """Every coroutine method of ``target`` first yields to the loop."""

    def __init__(self, target: Any, pause: Callable[[], Awaitable[None]]) -> None:
        self._target = target
        self._pause = pause

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            result = attr(*args, **kwargs)
            if asyncio.iscoroutine(result):
                return _after(self._pause, result)
            return result

        return call


async def _after(pause: Callable[[], Awaitable[None]], coro: Awaitable[Any]) -> Any:
    await pause()
    return await coro


class _YieldingUnitOfWork:
    """A unit of work whose every port call (each joined read, the decision
    write, a set-aside, the commit) first yields to the loop."""

    def __init__(self, inner: UnitOfWork, pause: Callable[[], Awaitable[None]]) -> None:
        self._inner = inner
        self._pause = pause
        self.snapshots = _YieldingProxy(inner.snapshots, pause)

    @property
    def write_batch(self) -> DecisionWriter:
        return self._write_batch

    async def _write_batch(
        self,
        extension: Change[Extension] | None,
        session: Change[Session] | None,
        payment: Change[PaymentSession] | None,
        ledger: LedgerEntry | None,
        log: Sequence[TransitionRecord],
        outbox: Sequence[OutboxMessage],
    ) -> None:
        await self._pause()
        await self._inner.write_batch(extension, session, payment, ledger, log, outbox)

    async def set_aside(self, extension_id: str, now: datetime, reason: str) -> int:
        await self._pause()
        return await self._inner.set_aside(extension_id, now, reason)

    async def __aenter__(self) -> Self:
        await self._inner.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._inner.__aexit__(exc_type, exc, tb)

    async def commit(self) -> None:
        await self._pause()
        await self._inner.commit()


class YieldingStore:
    """An :class:`InspectableStore` that suspends before every storage call.

    With ``rng`` set, each call yields a random number of times (mostly 0 to
    ``max_yields``, sometimes far more), so a seeded run explores different
    interleavings, long stalls included.
    """

    def __init__(
        self, inner: InspectableStore, *, rng: random.Random | None = None, max_yields: int = 8
    ) -> None:
        self.inner = inner
        self.rng = rng
        self.max_yields = max_yields

    async def pause(self) -> None:
        """Give the loop to other tasks (once, or a random number of times)."""
        if self.rng is None:
            times = 1
        elif self.rng.random() < 0.05:  # now and then a long stall: a slow query, a GC pause
            times = self.rng.randint(self.max_yields, 16 * self.max_yields)
        else:
            times = self.rng.randint(0, self.max_yields)
        for _ in range(times):
            await asyncio.sleep(0)

    def unit_of_work(self) -> _YieldingUnitOfWork:
        return _YieldingUnitOfWork(self.inner.unit_of_work(), self.pause)

    @property
    def outbox(self) -> Any:
        return _YieldingProxy(self.inner.outbox, self.pause)

    async def seed_session(self, session: Session) -> None:
        await self.inner.seed_session(session)

    async def seed_payment(self, payment: Any) -> None:
        await self.inner.seed_payment(payment)

    async def dump(
        self, *, session_ids: Collection[str] | None = None, payment_ids: Collection[str] = ()
    ) -> StoreDump:
        return await self.inner.dump(session_ids=session_ids, payment_ids=payment_ids)


class _InstantSelector:
    """A selector that never sleeps: a wait of ``t`` seconds moves virtual time by ``t``.

    Except while sockets other than the loop's own wake-up pipe are registered
    (a database driver's connections): a server may be answering, so first wait
    up to ``io_patience`` real seconds for it; only a quiet wait moves virtual
    time (otherwise a driver's own timeouts would fire before the answer came).
    """

    def __init__(self, inner: Any, loop: VirtualTimeLoop) -> None:
        self._inner = inner
        self._loop = loop

    def select(self, timeout: float | None = None) -> Any:
        ready = self._inner.select(0)
        if ready or timeout == 0:
            return ready
        if len(self._inner.get_map()) > 1:
            ready = self._inner.select(self._loop.io_patience)
            if ready:
                return ready
        if timeout is not None and timeout > 0:
            self._loop.virtual_now += timeout
        return ready

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop on virtual time, so runs are reproducible.

    The service backs off with real ``asyncio.sleep`` between retries; on a
    wall clock, which task wakes first would depend on the machine's speed and
    hypothesis could not replay a run.  Here sleeping costs nothing and timers
    fire in a fixed order.
    """

    #: real seconds a wait lets a server answer before virtual time moves on
    io_patience = 1.0

    def __init__(self) -> None:
        super().__init__()
        self.virtual_now = 0.0
        self._selector = _InstantSelector(self._selector, self)  # type: ignore[has-type]

    def time(self) -> float:
        return self.virtual_now
