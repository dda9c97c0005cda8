"""What only the SQL store has: URLs, drivers, row locks, busy files, engine
errors mid-transaction, mapped table names."""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import inspect, select
from sqlalchemy.ext.asyncio import create_async_engine

from extension_fsm.adapters.sqlalchemy import (
    SqlAlchemyStore,
    StorageError,
    resolve_url,
    to_async_url,
)
from extension_fsm.core import Change, Snapshot
from extension_fsm.errors import ConcurrencyConflict
from extension_fsm.model import Extension, ExtensionStatus, LedgerEntry, TransactionType
from extension_fsm.simulator import make_payment, make_session
from extension_fsm.testing.samples import add_committed

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def ext(ext_id: str, session_id: str, payment_id: str, expires_at: datetime) -> Extension:
    return Extension(
        ext_id, session_id, 10, 15000, payment_id, ExtensionStatus.PENDING, T0, expires_at, 10
    )


@pytest.mark.parametrize(
    ("given", "store_url", "async_url"),
    [
        ("sqlite:///x.db", "sqlite+pysqlite:///x.db", "sqlite+aiosqlite:///x.db"),
        ("sqlite://", "sqlite+pysqlite://", "sqlite+aiosqlite://"),
        ("sqlite+pysqlite:///x.db", "sqlite+pysqlite:///x.db", "sqlite+aiosqlite:///x.db"),
        ("postgresql://u@h/db", "postgresql+asyncpg://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("postgres://u@h/db", "postgresql+asyncpg://u@h/db", "postgresql+asyncpg://u@h/db"),
    ],
)
def test_urls_map_to_drivers(given: str, store_url: str, async_url: str) -> None:
    assert resolve_url(given).render_as_string() == store_url
    assert to_async_url(given).render_as_string() == async_url


@pytest.mark.parametrize(
    "bad",
    [
        "mysql://h/db",
        "postgresql+psycopg2://h/db",
        "sqlite+pysqlcipher://",
        # one driver per backend since 0.3.0: these say what to write instead
        "sqlite+aiosqlite:///x.db",
        "postgresql+psycopg://u@h/db",
    ],
)
def test_unsupported_urls_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="unsupported"):
        resolve_url(bad)
    with pytest.raises(ValueError, match="unsupported"):
        to_async_url(bad)


async def test_a_sqlite_async_engine_is_refused_with_what_to_pass_instead() -> None:
    engine = create_async_engine("sqlite+aiosqlite://")
    try:
        with pytest.raises(ValueError, match="sqlite:// URL"):
            await SqlAlchemyStore.open(engine)
    finally:
        await engine.dispose()


async def test_engine_error_mid_transaction_leaves_nothing(sql_backend: SqlAlchemyStore) -> None:
    store = sql_backend
    await store.seed_session(make_session("s1", expires_at=T0))
    await store.seed_payment(make_payment("p1"))
    before = await store.dump()
    with pytest.raises(StorageError):
        async with store.unit_of_work() as uow:
            assert (await uow.snapshots.for_request("s1", "p1")).session is not None
            await uow.write_batch(Change(None, ext("e1", "s1", "p1", T0)), None, None, None, [], [])
            # NOT NULL violation: the engine refuses the second decision of the
            # commit, after the first one's row was written in its transaction.
            broken = LedgerEntry(None, "s1", "e1", TransactionType.EXTENSION, 15000, T0)  # type: ignore[arg-type]
            await uow.write_batch(None, None, None, broken, [], [])
            await uow.commit()
    assert await store.dump() == before


async def test_table_names_map_one_by_one(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'mapped.db'}"
    names = {"chat_sessions": "host_sessions", "customers": "host_users"}
    store = await SqlAlchemyStore.open(
        url, create_schema=True, table_prefix="fsm_", table_names=names
    )
    try:
        await store.seed_session(make_session("s1", expires_at=T0))
        tables = set(await store.database.run_sync(lambda c: inspect(c).get_table_names()))
        assert {"host_sessions", "host_users", "fsm_extensions", "fsm_extension_outbox"} <= tables
        assert [s.id for s in (await store.dump()).sessions] == ["s1"]
    finally:
        await store.aclose()
    with pytest.raises(ValueError, match="unknown table keys"):
        await SqlAlchemyStore.open(url, table_names={"sessions": "x"})


async def test_sqlite_busy_file_is_a_concurrency_conflict(tmp_path: Path) -> None:
    path = tmp_path / "busy.db"
    store = await SqlAlchemyStore.open(f"sqlite:///{path}?timeout=0.2", create_schema=True)
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # another process holds the one write lock
        with pytest.raises(ConcurrencyConflict):
            async with store.unit_of_work() as uow:  # BEGIN IMMEDIATE with the first read
                await uow.snapshots.for_end("s1")
        other.execute("ROLLBACK")
        async with store.unit_of_work() as uow:  # and the lock was given back on failure
            assert (await uow.snapshots.for_end("s1")).session is None
    finally:
        other.close()
        await store.aclose()


async def test_sqlite_waits_for_another_writer_without_blocking_the_loop(
    tmp_path: Path,
) -> None:
    path = tmp_path / "wait.db"
    store = await SqlAlchemyStore.open(f"sqlite:///{path}", create_schema=True)
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.005)

    try:
        other.execute("BEGIN IMMEDIATE")  # another process holds the one write lock
        asyncio.get_running_loop().call_later(0.2, other.execute, "ROLLBACK")
        ticker = asyncio.create_task(tick())
        await asyncio.sleep(0)
        before = ticks
        async with store.unit_of_work() as uow:  # waits for the lock, then runs
            assert (await uow.snapshots.for_end("s1")).session is None
            await uow.commit()
        ticker.cancel()
        # The loop kept running while the unit of work waited (~0.2 s at 5 ms a tick).
        assert ticks - before >= 10, ticks - before
    finally:
        other.close()
        await store.aclose()


@pytest.mark.postgres
async def test_postgres_claim_skips_a_row_another_worker_holds(pg_url: str) -> None:
    """A sweep's claim (``for_due``: ``FOR UPDATE SKIP LOCKED`` and a lease)
    skips a row whose lock another worker holds instead of waiting for it;
    the unclaimed candidates (``due_ids``) still list it."""
    store = await SqlAlchemyStore.open(
        pg_url, create_schema=True, table_prefix="skip_", clock="local"
    )
    try:
        for n in (1, 2):
            await store.seed_session(make_session(f"s{n}", expires_at=T0))
            await store.seed_payment(make_payment(f"p{n}"))
        await add_committed(
            store,
            ext("e1", "s1", "p1", T0),
            ext("e2", "s2", "p2", T0 + timedelta(seconds=1)),
        )
        now = T0 + timedelta(minutes=1)
        x = store.tables.extensions
        async with store.unit_of_work() as holder:
            # another worker holds e1's row lock until its unit of work ends
            await holder.execute(select(x.c.id).where(x.c.id == "e1").with_for_update())
            async with store.unit_of_work() as other:
                assert await other.snapshots.due_ids(now, 10) == ["e1", "e2"]  # candidates only
                claimed = await other.snapshots.for_due(now, 10)  # skipped, not waited for
                assert [
                    s.extension.id for s in claimed if isinstance(s, Snapshot) and s.extension
                ] == ["e2"]
        async with store.unit_of_work() as uow:
            assert await uow.snapshots.due_ids(now, 10) == ["e1"]  # e2 leased to the claim
            claimed = await uow.snapshots.for_due(now, 10)  # e1 free again: claimed now
            assert [s.extension.id for s in claimed if isinstance(s, Snapshot) and s.extension] == [
                "e1"
            ]
    finally:
        await store.aclose()


async def test_write_batch_missed_compare_and_set_is_a_conflict_and_writes_nothing(
    sql_backend: SqlAlchemyStore,
) -> None:
    """The batched write (one statement on PostgreSQL, one per table on
    SQLite, run by the commit): a stale expected status anywhere in the
    decision writes nothing of it, as the separate UPDATEs would."""
    from extension_fsm.model import PaymentStatus, SessionStatus

    store = sql_backend
    try:
        await store.seed_session(make_session("s1", expires_at=T0, status=SessionStatus.EXTENDING))
        payment = make_payment("p1")
        await store.seed_payment(payment)
        pending = ext("e1", "s1", "p1", T0 + timedelta(seconds=10))
        await add_committed(store, pending)
        before = await store.dump()
        session = next(s for s in before.sessions if s.id == "s1")
        accepted = Change("pending", replace(pending, status=ExtensionStatus.ACCEPTED))
        ledger = LedgerEntry("c1", "s1", "e1", TransactionType.EXTENSION, 15000, T0)
        stale_session = Change("active", replace(session, status=SessionStatus.ACTIVE))
        consumed = Change("confirmed", replace(payment, status=PaymentStatus.CONSUMED))
        async with store.unit_of_work() as uow:
            batch = getattr(uow, "write_batch", None)
            assert batch is not None  # both offer the batched path
            with pytest.raises(ConcurrencyConflict):  # written by the commit
                await batch(accepted, stale_session, consumed, ledger, (), ())
                await uow.commit()
        assert await store.dump() == before  # extension, payment and ledger untouched
        async with store.unit_of_work() as uow:
            batch = uow.write_batch
            assert batch is not None
            fresh_session = Change("extending", replace(session, status=SessionStatus.ACTIVE))
            await batch(accepted, fresh_session, consumed, ledger, (), ())
            await uow.commit()
        after = await store.dump()
        assert [e.status for e in after.extensions] == [ExtensionStatus.ACCEPTED]
        assert [p.status for p in after.payments] == [PaymentStatus.CONSUMED]
        assert len(after.ledger) == 1
    finally:
        await store.aclose()


async def test_a_closed_store_refuses_work_instead_of_reopening_connections(
    tmp_path: Path,
) -> None:
    """A late caller (a background delivery that outlived its store) gets a
    StorageError; the closed engine never opens a fresh pool to leak."""
    store = await SqlAlchemyStore.open(f"sqlite:///{tmp_path / 'closed.db'}", create_schema=True)
    await store.aclose()
    with pytest.raises(StorageError, match="closed"):
        async with store.unit_of_work():
            pass
    with pytest.raises(StorageError, match="closed"):
        await store.outbox.claim(datetime.now(UTC), 10, 30)
    with pytest.raises(StorageError, match="closed"):
        await store.dump()
