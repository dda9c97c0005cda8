"""PostgreSQL's connection pool through SQLAlchemy's async engine: bounded
(``?pool_size=``), kept, closed, nothing leaked by a cancelled caller; ``IN``
lists through the engine."""

from __future__ import annotations

import asyncio
import gc
import itertools
import time
import warnings
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from sqlalchemy import bindparam, delete, select, text
from sqlalchemy.engine import make_url

from extension_fsm.adapters.sqlalchemy import SqlAlchemyStore
from extension_fsm.errors import StorageError
from extension_fsm.invariants import check_invariants
from extension_fsm.model import ExtensionStatus, Participant
from extension_fsm.ports import StoreDump
from extension_fsm.simulator import World, make_payment, make_session

pytestmark = pytest.mark.postgres

#: a guard against a hang: not a speed being measured
BOUND = 60
FAR = datetime(2030, 1, 1, tzinfo=UTC)


def _conninfo(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _backends(url: str) -> int:
    """Client connections to ``url``'s database other than this check's own."""
    with psycopg.connect(_conninfo(url), autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
        ).fetchone()
    return int(row[0]) if row else 0


def _backends_settle(url: str, expected: int) -> int:
    """The count once it reaches ``expected`` (a closed socket ends its backend a
    moment later), or the last count after a bounded wait."""
    deadline = time.monotonic() + 10
    while True:
        seen = _backends(url)
        if seen == expected or time.monotonic() > deadline:
            return seen
        time.sleep(0.05)


async def _timeline(store: SqlAlchemyStore) -> StoreDump:
    """Requests, an accept, a reject, a timeout and their deliveries, on a virtual clock."""
    ids = itertools.count()
    w = World(store=store, new_id=lambda: f"id{next(ids):04d}")
    now = w.clock.now()
    for n in (1, 2, 3):
        session = make_session(f"s{n}", expires_at=now + timedelta(minutes=5))
        await w.add_session(session)
        await w.add_payment(make_payment(f"p{n}"))
        w.connect(session, Participant.MITRA, on_session_socket=n == 1, online=n < 3)
    svc = w.service
    asks = []
    for n in (1, 2, 3):
        asks.append(
            await svc.request_extension(
                session_id=f"s{n}",
                customer_id="c1",
                duration_minutes=10 * n,
                price=15000,
                extension_payment_session_id=f"p{n}",
            )
        )
        await w.settle()
    a, b, c = asks
    await svc.respond_to_extension(extension_id=a.id, session_id="s1", mitra_id="m1", accepted=True)
    await w.settle()
    await svc.respond_to_extension(
        extension_id=b.id, session_id="s2", mitra_id="m1", accepted=False
    )
    await w.settle()
    await w.clock.advance(120)  # c times out
    await w.settle()
    dump = await store.dump()
    assert [e.status for e in dump.extensions if e.id == c.id] != [ExtensionStatus.PENDING]
    assert check_invariants(dump, now=w.clock.now()) == []
    return dump


def _raw_tables(url: str, store: SqlAlchemyStore) -> dict[str, list[tuple[Any, ...]]]:
    """Every stored row of every table of ``store``, as PostgreSQL returns it."""
    t = store.tables
    found = {}
    with psycopg.connect(_conninfo(url)) as conn:
        for key, table in (
            ("customers", t.customers),
            ("sessions", t.sessions),
            ("payments", t.payments),
            ("ledger", t.ledger),
            ("extensions", t.extensions),
            ("outbox", t.outbox),
            ("log", t.log),
        ):
            rows = conn.execute(f'SELECT * FROM "{table.name}" ORDER BY 1').fetchall()
            found[key] = [tuple(r) for r in rows]
    return found


async def test_pool_size_is_checked(pg_url: str) -> None:
    with pytest.raises(ValueError, match="pool_size"):
        await SqlAlchemyStore.open(pg_url + "?pool_size=0")
    with pytest.raises(ValueError, match="pool_size"):
        await SqlAlchemyStore.open(pg_url + "?pool_size=many")


async def test_the_pool_is_bounded_kept_and_closed(pg_url: str) -> None:
    await asyncio.to_thread(_backends_settle, pg_url, 0)
    store = await SqlAlchemyStore.open(pg_url + "?pool_size=3", clock="local")
    try:

        async def one() -> None:
            async with store.unit_of_work() as uow:
                await uow.execute(text("SELECT 1"))
                await asyncio.sleep(0.02)  # overlap, so the pool opens what it may

        await asyncio.wait_for(asyncio.gather(*(one() for _ in range(12))), BOUND)
        opened = await asyncio.to_thread(_backends, pg_url)
        assert 1 <= opened <= 3  # never more than pool_size
        for _ in range(5):  # kept: later calls reuse them, no new connection
            await asyncio.wait_for(asyncio.gather(*(one() for _ in range(3))), BOUND)
        assert await asyncio.to_thread(_backends, pg_url) <= 3
    finally:
        await store.aclose()
    assert await asyncio.to_thread(_backends_settle, pg_url, 0) == 0
    with pytest.raises(StorageError):
        async with store.unit_of_work():
            pass


async def test_a_caller_cancelled_while_connecting_leaks_no_connection(pg_url: str) -> None:
    await asyncio.to_thread(_backends_settle, pg_url, 0)
    store = await SqlAlchemyStore.open(pg_url + "?pool_size=4", clock="local")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        try:
            for delay in (0.0, 0.001, 0.003, 0.01, 0.03):

                async def one() -> None:
                    async with store.unit_of_work() as uow:
                        await uow.execute(text("SELECT 1"))

                tasks = [asyncio.ensure_future(one()) for _ in range(8)]
                await asyncio.sleep(delay)  # some connecting, some waiting, some done
                for task in tasks:
                    task.cancel()
                await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), BOUND)
            # The pool still serves every connection it holds.
            async with store.unit_of_work() as uow:
                assert (await uow.execute(text("SELECT 1"))).scalar() == 1
        finally:
            await store.aclose()
        gc.collect()
    assert await asyncio.to_thread(_backends_settle, pg_url, 0) == 0
    leaked = [w for w in caught if issubclass(w.category, ResourceWarning)]
    assert leaked == []


async def test_in_lists_run_through_the_engine(pg_url: str) -> None:
    store = await SqlAlchemyStore.open(pg_url, create_schema=True, table_prefix="i_", clock="local")
    try:
        for n in (1, 2, 3):
            await store.seed_session(make_session(f"s{n}", expires_at=FAR))
        t = store.tables.sessions
        by_list = select(t.c.id).where(t.c.id.in_(bindparam("ids", expanding=True)))
        async with store.unit_of_work() as uow:
            literal = select(t.c.id).where(t.c.id.in_(["s1", "s3"])).order_by(t.c.id)
            assert [r.id for r in await uow.rows(literal)] == ["s1", "s3"]
            for ids in (["s2"], ["s1", "s2", "s3"], ["nope"]):
                got = await uow.rows(by_list.order_by(t.c.id), {"ids": ids})
                assert [r.id for r in got] == [i for i in ids if i != "nope"]
            await uow.execute(delete(t).where(t.c.id.in_(["s1"])))
            await uow.commit()
        assert [s.id for s in (await store.dump()).sessions] == ["s2", "s3"]
    finally:
        await store.aclose()


async def test_closing_waits_for_a_unit_of_work_still_open(pg_url: str) -> None:
    store = await SqlAlchemyStore.open(pg_url, clock="local")
    async with store.unit_of_work() as uow:
        await uow.execute(text("SELECT 1"))
        closing = asyncio.ensure_future(store.aclose())
        await asyncio.sleep(0.05)
        assert not closing.done()  # the pool waits for the connection in use
        assert (await uow.execute(text("SELECT 2"))).scalar() == 2
    await asyncio.wait_for(closing, BOUND)  # given back: the pool closes
    assert await asyncio.to_thread(_backends_settle, pg_url, 0) == 0
