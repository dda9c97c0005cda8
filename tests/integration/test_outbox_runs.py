"""One claim takes a run of each lane's rows, on every store, and the delivery
of one accept's rows costs one claim and one mark on PostgreSQL.

A claim holds, of each lane, the unbroken run of its open rows from the oldest
on that are available (and among the ids asked for).  While a claim holds a
lane's oldest open row, no other claim gets any row of that lane: its oldest
is leased (or, on PostgreSQL, locked by the claim still running) and the rest
are behind it.  Rows claimed behind a row that failed are handed back untried.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from extension_fsm import DeliveryError, OutboxDispatcher
from extension_fsm.adapters.clock import VirtualClock
from extension_fsm.adapters.memory import MemoryPush, MemorySessionTimer, MemorySockets
from extension_fsm.adapters.sqlalchemy import SqlAlchemyStore
from extension_fsm.model import SessionExpiryExtended
from extension_fsm.outbox import encode_effects
from extension_fsm.ports import InspectableStore
from extension_fsm.testing.samples import add_outbox
from tests.unit._support import new_world

LEASE = 60.0


class _SecondCallFails(MemorySessionTimer):
    """The host's timer: its second call fails (retryable); every call is recorded."""

    def __init__(self) -> None:
        super().__init__()
        self.tried: list[datetime] = []

    async def expiry_extended(self, session_id: str, expires_at: datetime, *, seq: int) -> None:
        self.tried.append(expires_at)
        if len(self.tried) == 2:
            raise DeliveryError("host timer down", retryable=True)
        await super().expiry_extended(session_id, expires_at, seq=seq)


async def _write(store: InspectableStore, at: datetime, sessions: int, per: int) -> list[str]:
    """``per`` session-timer rows (one lane) for each of sessions s0..s{n-1}."""
    effects = [
        SessionExpiryExtended(f"s{s}", at + timedelta(minutes=k))
        for s in range(sessions)
        for k in range(per)
    ]
    counter = iter(range(1_000_000))
    rows = encode_effects(effects, at, lambda: f"m{next(counter):03d}")
    await add_outbox(store, *rows)
    return [r.id for r in rows]


async def _now(store: InspectableStore) -> datetime:
    """The time leases are judged by: the database's on PostgreSQL's default
    clock, else any time after the rows were written."""
    if isinstance(store, SqlAlchemyStore) and store.database.is_postgres:
        from tests.integration.sql_support import database_now

        return await database_now(store)
    return datetime.now().astimezone() + timedelta(seconds=1)


async def test_a_claim_takes_each_lane_run_and_a_second_claim_none_of_it(
    backend: InspectableStore,
) -> None:
    ids = await _write(backend, datetime.now().astimezone(), 2, 3)
    now = await _now(backend)
    first = await backend.outbox.claim(now, 100, LEASE)
    assert [m.id for m in first] == ids  # both lanes whole, in order
    assert await backend.outbox.claim(now, 100, LEASE) == []
    assert await backend.outbox.claim(now, 100, LEASE, ids) == []


async def test_a_claim_cut_by_its_limit_or_its_ids_keeps_each_run_unbroken(
    backend: InspectableStore,
) -> None:
    ids = await _write(backend, datetime.now().astimezone(), 2, 3)  # s0: 0-2, s1: 3-5
    now = await _now(backend)
    assert [m.id for m in await backend.outbox.claim(now, 2, LEASE)] == ids[:2]
    # s0's third row is the oldest open one of its lane now, but leased rows
    # of its lane are older: it is behind them; s1 is taken up to the gap.
    asked = [ids[2], ids[3], ids[5]]
    assert [m.id for m in await backend.outbox.claim(now, 100, LEASE, asked)] == [ids[3]]
    # The released head of a lane and what follows it are taken again.
    await backend.outbox.mark_delivered(ids[:2], now)
    assert [m.id for m in await backend.outbox.claim(now, 100, LEASE)] == [ids[2]]
    await backend.outbox.release([ids[3]], now)
    assert [m.id for m in await backend.outbox.claim(now, 100, LEASE)] == ids[3:]


async def test_rows_behind_a_failed_row_of_their_lane_are_handed_back_untried(
    backend: InspectableStore,
) -> None:
    ids = await _write(backend, datetime.now().astimezone(), 1, 3)
    clock = VirtualClock(await _now(backend))
    timer = _SecondCallFails()
    calls = timer.tried
    dispatcher = OutboxDispatcher(
        backend.outbox,
        clock=clock,
        sockets=MemorySockets(),
        push=MemoryPush(),
        session_timer=timer,
        base_backoff=1.0,
    )
    report = await dispatcher.deliver(ids)
    assert (report.delivered, report.retried, report.deferred) == (1, 1, 0)
    assert len(calls) == 2  # the third row was not tried behind the failed second
    dump = await backend.dump()
    assert [delivered for _, delivered in dump.outbox] == [True, False, False]
    if isinstance(backend, SqlAlchemyStore) and backend.database.is_postgres:
        return  # the database's clock judges backoffs there, not the virtual one
    # The third row is available again at once, but only after the second.
    await clock.advance(0.5)
    assert await backend.outbox.claim(clock.now(), 100, LEASE) == []
    await clock.advance(1)
    report = await dispatcher.dispatch_due()
    assert report.delivered == 2
    assert len(calls) == 4 and calls[1] == calls[2]


@pytest.mark.postgres
async def test_postgres_a_claim_skipping_a_locked_head_takes_nothing_behind_it(
    pg_url: str,
) -> None:
    """A claim that skips a lane's locked oldest row (another claim still
    running) must not take the rows behind it."""
    store = await SqlAlchemyStore.open(pg_url, create_schema=True, table_prefix="runs_")
    try:
        from tests.conftest import empty_tables

        await store.database.run_sync(empty_tables(store))
        ids = await _write(store, datetime.now().astimezone(), 2, 3)
        table = store.tables.outbox
        tx = await store.database.begin()
        try:
            await tx.run(
                lambda conn: conn.execute(
                    table.select().where(table.c.id == ids[0]).with_for_update()
                ).all()
            )
            now = await _now(store)
            taken = await store.outbox.claim(now, 100, LEASE, ids)
            assert [m.id for m in taken] == ids[3:]  # s1 whole, nothing of s0
        finally:
            await tx.finish(commit=False)
        taken = await store.outbox.claim(now, 100, LEASE, ids)
        assert [m.id for m in taken] == ids[:3]
    finally:
        await store.aclose()


@pytest.mark.postgres
async def test_postgres_one_accept_rows_are_delivered_in_one_claim_and_one_mark(
    pg_url: str,
) -> None:
    """The accept's rows (two in each participant's lane) go out in two round
    trips on the wire: one claim, one mark."""
    from bench.pg_calls import counting_proxy

    async with counting_proxy(pg_url) as (proxied, counts):
        store = await SqlAlchemyStore.open(proxied, create_schema=True, table_prefix="rt_")
        try:
            from tests.conftest import empty_tables

            await store.database.run_sync(empty_tables(store))
            world, session = await new_world(store=store)
            ext = await world.service.request_extension(
                session_id=session.id,
                customer_id="c1",
                duration_minutes=30,
                price=15000,
                extension_payment_session_id="p1",
            )
            await world.settle()
            written = len((await store.dump()).outbox)
            await world.service.respond_to_extension(
                extension_id=ext.id, session_id=session.id, mitra_id="m1", accepted=True
            )
            # The delivery is a background task: it has not started yet.
            before, sent = counts.copy(), len(world.deliveries)
            await world.settle()
            spent = counts.since(before)
            assert len(world.deliveries) > sent  # delivered in the counted window
            dump = await store.dump()
            # the mark's no-wait commit was its own: the pooled connection waits again
            setting = await store.database.run_sync(
                lambda conn: conn.exec_driver_sql("SHOW synchronous_commit").scalar()
            )
            assert setting == "on"
        finally:
            await store.aclose()
    accepted = [m for m, _ in dump.outbox][written:]
    lanes: dict[Any, int] = {}
    for m in accepted:
        lanes[m.lane] = lanes.get(m.lane, 0) + 1
    assert max(lanes.values()) >= 2  # a lane with a run: not one row per lane
    assert all(delivered for _, delivered in dump.outbox)
    assert spent.round_trips <= 2, spent
    assert spent.statements <= 2, spent
