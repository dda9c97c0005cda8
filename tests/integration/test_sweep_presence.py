"""The timeout never asks the network with a database transaction open, and a
presence that hangs cannot stop it: the rows time out uncharged (memory,
SQLite, PostgreSQL; the sweep's batch and one-by-one paths, and the timer's)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from types import TracebackType
from typing import Any, Self

from extension_fsm import ExtensionService
from extension_fsm.adapters.clock import VirtualClock
from extension_fsm.adapters.config import StaticConfig
from extension_fsm.adapters.memory import (
    MemoryPush,
    MemorySessionTimer,
    MemorySockets,
    MemoryStore,
)
from extension_fsm.adapters.sqlalchemy import SqlAlchemyStore
from extension_fsm.model import ExtensionStatus, Participant, PaymentStatus, TimeoutReason
from tests.integration.host_rows import T0, Host, host, pg_url

__all__ = ["host", "pg_url"]  # the fixtures, imported for pytest


class CountingStore:
    """Any store, counting the units of work open at each moment."""

    def __init__(self, inner: MemoryStore | SqlAlchemyStore) -> None:
        self.inner = inner
        self.open = 0

    def unit_of_work(self) -> CountingUnit:
        return CountingUnit(self, self.inner.unit_of_work())

    @property
    def outbox(self) -> Any:
        return self.inner.outbox


class CountingUnit:
    """A unit of work that tells its store while it is open."""

    def __init__(self, owner: CountingStore, inner: Any) -> None:
        self._owner = owner
        self._inner = inner
        self._open = False
        # the port's unit of work: its reads, its decision write, its set-aside
        self.snapshots, self.write_batch = inner.snapshots, inner.write_batch
        self.set_aside = inner.set_aside

    async def __aenter__(self) -> Self:
        await self._inner.__aenter__()
        self._open = True
        self._owner.open += 1
        return self

    def _closed(self) -> None:
        if self._open:
            self._open = False
            self._owner.open -= 1

    async def commit(self) -> None:
        try:
            await self._inner.commit()
        finally:
            self._closed()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closed()
        await self._inner.__aexit__(exc_type, exc, tb)


class HangingPresence:
    """Records how many units of work were open at each call, then never answers."""

    def __init__(self, store: CountingStore) -> None:
        self.store = store
        self.open_at_call: list[int] = []

    async def is_online(self, mitra_id: str) -> bool:
        self.open_at_call.append(self.store.open)
        await asyncio.Event().wait()
        return True


class RecordingSockets(MemorySockets):
    """Connected at once, recording the open units of work at each question."""

    def __init__(self, store: CountingStore) -> None:
        super().__init__()
        self.store = store
        self.open_at_call: list[int] = []

    async def is_connected(self, participant: Participant, user_id: str) -> bool:
        self.open_at_call.append(self.store.open)
        return True


def _service(store: CountingStore, clock: VirtualClock, batch: int = 100) -> ExtensionService:
    service = ExtensionService(
        store,  # type: ignore[arg-type]
        clock=clock,
        config=StaticConfig(),
        sockets=RecordingSockets(store),
        presence=HangingPresence(store),
        push=MemoryPush(),
        session_timer=MemorySessionTimer(),
        sweep_batch=batch,
    )
    service.presence_timeout = 0.05
    return service


def _asked(service: ExtensionService) -> list[int]:
    sockets, presence = service._sweep._sockets, service._sweep._presence  # the fakes above
    assert isinstance(sockets, RecordingSockets) and isinstance(presence, HangingPresence)
    return sockets.open_at_call + presence.open_at_call


async def test_a_hanging_presence_asked_outside_any_transaction_never_approves(host: Host) -> None:
    ids = await host.seed_due(5)
    store = CountingStore(host.store)
    service = _service(store, VirtualClock(T0 + timedelta(seconds=1)), batch=2)

    resolved = await asyncio.wait_for(service.sweep_due(), 30)

    assert sorted(e.id for e in resolved) == ids
    assert {(e.status, e.reason) for e in resolved} == {
        (ExtensionStatus.TIMEOUT, TimeoutReason.SAFEGUARD)
    }
    asked = _asked(service)
    assert asked and set(asked) == {0}  # asked, and never inside a unit of work
    assert store.open == 0
    dump = await host.store.dump()
    assert dump.ledger == []
    assert {p.status for p in dump.payments} == {PaymentStatus.FAILED}


async def test_the_timer_path_asks_presence_outside_its_transaction(host: Host) -> None:
    (ext_id,) = await host.seed_due(1)
    store = CountingStore(host.store)
    service = _service(store, VirtualClock(T0 + timedelta(seconds=1)))

    # What the in-process timer runs when the deadline passes.
    outcome = await asyncio.wait_for(service._sweep.time_out(ext_id), 30)

    assert outcome is not None and outcome.status is ExtensionStatus.TIMEOUT
    asked = _asked(service)
    assert asked and set(asked) == {0}
    assert (await host.store.dump()).ledger == []
