"""One clock judges every deadline on PostgreSQL: the database's, the one the
decisions use.  ``/info``'s "still pending" is judged by it (an instance whose
clock runs fast does not hide an extension the mitra can still answer), and so
are the outbox's leases (two dispatchers whose clocks are 45 s apart either way
deliver each session-timer row once) and the rows' availability (a row written
by an instance whose clock is ahead is due at once for every dispatcher)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timedelta

import pytest
from sqlalchemy import update

from extension_fsm.adapters.clock import SystemClock, VirtualClock
from extension_fsm.adapters.memory import MemoryPush, MemorySockets
from extension_fsm.adapters.sqlalchemy import SqlAlchemyStore
from extension_fsm.model import ExtensionStatus, SessionStatus, StartClosureGrace
from extension_fsm.outbox import OutboxDispatcher, encode_effects
from extension_fsm.ports import OutboxMessage
from extension_fsm.simulator import make_payment, make_session
from extension_fsm.testing.samples import add_outbox
from tests.integration.host_rows import make_service
from tests.integration.sql_support import database_now

SKEW = timedelta(seconds=45)


@pytest.fixture
async def store(pg_url: str) -> AsyncIterator[SqlAlchemyStore]:
    """The default store on PostgreSQL (the database's clock)."""
    s = await SqlAlchemyStore.open(
        pg_url,
        create_schema=True,
        table_prefix=f"c{uuid.uuid4().hex[:8]}_",
    )
    assert s.uses_database_clock
    try:
        yield s
    finally:
        await s.aclose()


class _SkewedClock:
    """The system's clock, ``offset`` off."""

    def __init__(self, offset: timedelta) -> None:
        self.offset = offset

    def now(self) -> datetime:
        return SystemClock().now() + self.offset


async def test_one_clock_a_fast_instance_still_shows_an_answerable_extension_in_info(
    store: SqlAlchemyStore,
) -> None:
    await store.seed_session(make_session("s1", expires_at=await database_now(store)))
    await store.seed_payment(make_payment("p1"))
    honest = make_service(store, _SkewedClock(timedelta(0)))  # type: ignore[arg-type]
    ext = await honest.request_extension(
        session_id="s1",
        customer_id="c1",
        duration_minutes=30,
        price=15000,
        extension_payment_session_id="p1",
    )
    # An instance whose clock is past the deadline (60 s away by the
    # database): its own clock would call the window closed.
    fast = make_service(store, VirtualClock(ext.expires_at + timedelta(seconds=5)))

    info = await fast.pending_extension("s1")

    assert info is not None and info.extension_id == ext.id
    answered = await fast.respond_to_extension(
        extension_id=ext.id, session_id="s1", mitra_id="m1", accepted=True
    )
    assert answered.status is ExtensionStatus.ACCEPTED
    assert await fast.pending_extension("s1") is None  # answered: nothing to show


async def test_one_clock_a_slow_instance_does_not_show_a_window_the_database_closed(
    store: SqlAlchemyStore,
) -> None:
    now = await database_now(store)
    await store.seed_session(make_session("s2", expires_at=now))
    await store.seed_payment(make_payment("p2"))
    slow = make_service(store, VirtualClock(now - timedelta(minutes=10)))
    ext = await slow.request_extension(
        session_id="s2",
        customer_id="c1",
        duration_minutes=30,
        price=15000,
        extension_payment_session_id="p2",
    )
    assert ext.requested_at >= now  # the request itself was stamped by the database
    late = make_service(store, VirtualClock(ext.expires_at - timedelta(minutes=5)))
    assert await late.pending_extension("s2") is not None
    # Move the deadline into the past by the database's clock; the slow
    # instance's own clock would still call it open.
    x = store.tables.extensions
    async with store.unit_of_work() as uow:
        await uow.execute(update(x).where(x.c.id == ext.id).values(expires_at=now))
        await uow.commit()
    assert await late.pending_extension("s2") is None


class _GatedTimer:
    """Session-timer calls are counted per row; the first dispatcher's wait
    for ``gate`` (so its rows stay leased while the other dispatcher passes)."""

    def __init__(self, gate: asyncio.Event | None) -> None:
        self.gate = gate
        self.started = asyncio.Event()
        self.calls: list[str] = []

    async def expiry_extended(self, session_id: str, expires_at: datetime, *, seq: int) -> None:
        await self._called(session_id)

    async def start_closure_grace(self, session_id: str, deadline: datetime, *, seq: int) -> None:
        await self._called(session_id)

    async def clear_closure_grace(self, session_id: str, *, seq: int) -> None:
        await self._called(session_id)

    async def _called(self, session_id: str) -> None:
        self.calls.append(session_id)
        self.started.set()
        if self.gate is not None:
            await self.gate.wait()


def _dispatcher(store: SqlAlchemyStore, clock: object, timer: _GatedTimer) -> OutboxDispatcher:
    return OutboxDispatcher(
        store.outbox,
        clock=clock,  # type: ignore[arg-type]
        sockets=MemorySockets(),
        push=MemoryPush(),
        session_timer=timer,
        lease_seconds=31.0,
        call_timeout=15.0,
    )


async def _timer_rows(store: SqlAlchemyStore, n: int, stamp: datetime) -> list[str]:
    """One start_closure_grace row per session (its own lane), stamped ``stamp``."""
    effects = [StartClosureGrace(f"t{i:03d}", stamp + timedelta(minutes=5)) for i in range(n)]
    rows = encode_effects(effects, stamp, lambda: str(uuid.uuid4()))
    await add_outbox(store, *rows)
    return [row.id for row in rows]


@pytest.mark.timeout(120)
async def test_one_clock_outbox_leases_two_workers_45s_apart_deliver_each_timer_row_once(
    store: SqlAlchemyStore,
) -> None:
    # written two minutes ago: due for both, whichever clock judges it
    await _timer_rows(store, 20, await database_now(store) - timedelta(minutes=2))
    gate = asyncio.Event()
    behind = _GatedTimer(gate)  # its deliveries hang until the other has passed
    ahead = _GatedTimer(None)
    slow = _dispatcher(store, _SkewedClock(-SKEW), behind)
    fast = _dispatcher(store, _SkewedClock(SKEW), ahead)

    first = asyncio.create_task(slow.dispatch_due())
    try:
        await asyncio.wait_for(behind.started.wait(), 30)  # it holds the rows now
        # The slow dispatcher's lease (31 s from its clock) ended 14 s ago by
        # the fast one's clock: with leases judged per worker, it takes them all.
        second = await asyncio.wait_for(fast.dispatch_due(), 30)
    finally:
        gate.set()
    done = await asyncio.wait_for(first, 60)

    assert second.handled == 0 and ahead.calls == []
    assert done.delivered == 20
    assert sorted(behind.calls) == [f"t{i:03d}" for i in range(20)]  # each once
    assert (await fast.dispatch_due()).handled == 0
    assert (await slow.dispatch_due()).handled == 0


class _NeverDelivers:
    """An outbox that claims nothing: a writer that stops right after its commit."""

    async def claim(
        self, now: datetime, limit: int, lease_seconds: float, ids: Sequence[str] | None = None
    ) -> list[OutboxMessage]:
        return []

    async def mark_delivered(self, message_ids: Sequence[str], at: datetime) -> None:
        raise AssertionError("nothing was claimed")

    async def mark_retry(self, message_id: str, available_at: datetime, error: str) -> None:
        raise AssertionError("nothing was claimed")

    async def release(self, message_ids: Sequence[str], at: datetime) -> None:
        raise AssertionError("nothing was claimed")

    async def mark_dead(self, message_id: str, at: datetime, error: str) -> None:
        raise AssertionError("nothing was claimed")


@pytest.mark.timeout(120)
async def test_one_clock_rows_written_by_a_fast_instance_are_due_at_once_everywhere(
    store: SqlAlchemyStore,
) -> None:
    """Rows are stamped with the database's time: a writer 45 s ahead neither
    hides its rows from a dispatcher 45 s behind (it stopped before delivering
    them) nor delays its own post-commit delivery."""
    for sid, pid in (("w1", "wp1"), ("w2", "wp2")):
        await store.seed_session(
            make_session(sid, status=SessionStatus.ACTIVE, expires_at=await database_now(store))
        )
        await store.seed_payment(make_payment(pid))
    stopped = make_service(store, _SkewedClock(SKEW))  # type: ignore[arg-type]
    stopped._dispatcher = OutboxDispatcher(  # a writer that stops after its commit
        _NeverDelivers(),
        clock=_SkewedClock(SKEW),  # type: ignore[arg-type]
        sockets=MemorySockets(),
        push=MemoryPush(),
        session_timer=_GatedTimer(None),
    )
    await stopped.request_extension(
        session_id="w1",
        customer_id="c1",
        duration_minutes=30,
        price=15000,
        extension_payment_session_id="wp1",
    )
    behind = _dispatcher(store, _SkewedClock(-SKEW), _GatedTimer(None))
    report = await asyncio.wait_for(behind.dispatch_due(), 30)
    assert report.delivered == 2 and report.retried == 0  # both notices, at once

    writer = make_service(store, _SkewedClock(SKEW))  # type: ignore[arg-type]
    await writer.request_extension(
        session_id="w2",
        customer_id="c1",
        duration_minutes=30,
        price=15000,
        extension_payment_session_id="wp2",
    )
    await asyncio.wait_for(writer.dispatcher.drain(), 30)
    dump = await store.dump(session_ids=["w2"])
    assert dump.outbox and all(delivered for _, delivered in dump.outbox)


@pytest.mark.timeout(120)
async def test_one_clock_a_fast_instance_ending_a_session_delivers_its_rows_at_once(
    store: SqlAlchemyStore,
) -> None:
    """``end_session`` stamps its outbox rows with the database's time too."""
    await store.seed_session(make_session("w3", expires_at=await database_now(store)))
    await store.seed_payment(make_payment("wp3"))
    writer = make_service(store, _SkewedClock(SKEW))  # type: ignore[arg-type]
    await writer.request_extension(
        session_id="w3",
        customer_id="c1",
        duration_minutes=30,
        price=15000,
        extension_payment_session_id="wp3",
    )
    await asyncio.wait_for(writer.dispatcher.drain(), 30)
    ended = await writer.end_session("w3")
    assert ended.status is SessionStatus.ENDED
    await asyncio.wait_for(writer.dispatcher.drain(), 30)
    await asyncio.wait_for(writer.dispatcher.dispatch_due(), 30)  # its loop's next pass
    dump = await store.dump(session_ids=["w3"])
    assert [(m.kind, m.lane, done) for m, done in dump.outbox if not done] == []
    assert len(dump.outbox) > 2
