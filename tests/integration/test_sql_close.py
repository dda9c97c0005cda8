"""Closing a SQL store while work is running leaves no connection open.

A background delivery can outlive the request that started it.  Once the
store is closed, every path to the database (the unit of work and the
outbox's autocommit calls alike) is refused instead of opening a fresh pool,
and closing waits for the work that holds a connection to give it back, so no
socket is left to the garbage collector.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import psycopg
import pytest
from sqlalchemy.engine import make_url

from extension_fsm.adapters.sqlalchemy import SqlAlchemyStore
from extension_fsm.errors import StorageError
from tests.integration.sql_support import _admin_conninfo, private_postgres_database

pytestmark = pytest.mark.postgres

NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
async def pg() -> AsyncIterator[tuple[SqlAlchemyStore, str]]:
    with private_postgres_database("close") as url:
        store = await SqlAlchemyStore.open(url, create_schema=True, clock="local")
        try:
            yield store, make_url(url).database or ""
        finally:
            await store.aclose()


def _backends(database: str) -> int:
    with psycopg.connect(_admin_conninfo(), autocommit=True, connect_timeout=5) as admin:
        row = admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (database,)
        ).fetchone()
    return int(row[0]) if row else 0


async def _until_no_backend(database: str, within: float = 30.0) -> int:
    """The server's count of connections to ``database`` once it reaches 0
    (a closed client's backend exits a moment after), or the last count."""
    deadline = time.monotonic() + within
    while True:
        count = await asyncio.to_thread(_backends, database)
        if count == 0 or time.monotonic() > deadline:
            return count
        await asyncio.sleep(0.1)


async def test_a_closed_store_refuses_outbox_calls_and_opens_no_connection(
    pg: tuple[SqlAlchemyStore, str],
) -> None:
    store, database = pg
    assert await store.outbox.claim(NOW, 10, 30.0) == []  # a pooled connection exists
    await store.aclose()

    with pytest.raises(StorageError):
        await store.outbox.claim(NOW, 10, 30.0)
    with pytest.raises(StorageError):
        await store.outbox.mark_delivered(["no-such-row"], NOW)
    with pytest.raises(StorageError):
        async with store.unit_of_work():
            pass
    assert await _until_no_backend(database) == 0


async def test_closing_waits_for_the_work_holding_a_connection(
    pg: tuple[SqlAlchemyStore, str],
) -> None:
    store, database = pg
    db = store.database
    conn = await db.begin()
    await conn.run(lambda c: c.exec_driver_sql("SELECT 1"))  # it holds a connection
    closing = asyncio.create_task(store.aclose())
    await asyncio.sleep(0.2)
    assert not closing.done(), "closed while a unit of work still held its connection"
    with pytest.raises(StorageError):
        await db.begin()  # new work is refused while closing

    await conn.finish(commit=True)
    await asyncio.wait_for(closing, 30)
    assert await _until_no_backend(database) == 0


async def test_work_outliving_the_grace_closes_its_own_connection(
    pg: tuple[SqlAlchemyStore, str],
) -> None:
    store, database = pg
    db = store.database
    conn = await db.begin()
    await conn.run(lambda c: c.exec_driver_sql("SELECT 1"))  # it holds a connection
    await asyncio.wait_for(db.dispose(grace=0.1), 30)  # does not wait for ever

    await conn.finish(commit=False)
    assert await _until_no_backend(database) == 0
