"""On PostgreSQL deadlines are judged by the database's clock, not by each
worker's: a worker whose clock is fast does not time out an extension early, one
whose clock is slow does not accept an answer late."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import pytest
from sqlalchemy import insert

from extension_fsm.adapters.clock import SystemClock, VirtualClock
from extension_fsm.adapters.sqlalchemy import SqlAlchemyStore
from extension_fsm.adapters.sqlalchemy.rows import _extension_values
from extension_fsm.errors import ErrorCode, ExtensionError
from extension_fsm.model import Extension, ExtensionStatus, SessionStatus
from extension_fsm.simulator import make_payment, make_session
from tests.integration.host_rows import make_service
from tests.integration.sql_support import database_now

# Skews and margins of minutes rather than seconds: the same property, and a
# loaded machine cannot turn "4 left" into "due" between two statements.
SKEW = timedelta(minutes=5)


@pytest.fixture
async def store(pg_url: str) -> AsyncIterator[SqlAlchemyStore]:
    s = await SqlAlchemyStore.open(
        pg_url, create_schema=True, table_prefix=f"k{uuid.uuid4().hex[:8]}_"
    )
    assert s.uses_database_clock  # the default on PostgreSQL
    try:
        yield s
    finally:
        await s.aclose()


async def _pending(store: SqlAlchemyStore, expires_at: datetime) -> str:
    """s1 extending under e1, which expires at ``expires_at``."""
    await store.seed_session(
        make_session("s1", status=SessionStatus.EXTENDING, expires_at=expires_at)
    )
    await store.seed_payment(make_payment("p1"))
    ext = Extension(
        "e1", "s1", 30, 15000, "p1", ExtensionStatus.PENDING, expires_at, expires_at, 10
    )
    async with store.unit_of_work() as uow:
        await uow.execute(insert(store.tables.extensions), _extension_values(ext))
        await uow.commit()
    return ext.id


async def test_a_fast_worker_does_not_time_out_an_extension_with_time_left(
    store: SqlAlchemyStore,
) -> None:
    ext_id = await _pending(store, await database_now(store) + timedelta(minutes=4))
    fast = make_service(store, VirtualClock(SystemClock().now() + SKEW))

    assert await fast.sweep_due() == []
    assert await fast._sweep.time_out(ext_id) is None  # the timer path, fired early
    answered = await fast.respond_to_extension(
        extension_id=ext_id, session_id="s1", mitra_id="m1", accepted=True
    )
    assert answered.status is ExtensionStatus.ACCEPTED and not answered.via_timeout


async def test_a_slow_worker_does_not_accept_an_answer_after_the_deadline(
    store: SqlAlchemyStore,
) -> None:
    ext_id = await _pending(store, await database_now(store) - timedelta(minutes=3))
    slow = make_service(store, VirtualClock(SystemClock().now() - SKEW))

    with pytest.raises(ExtensionError) as late:
        await slow.respond_to_extension(
            extension_id=ext_id, session_id="s1", mitra_id="m1", accepted=True
        )
    assert late.value.code is ErrorCode.EXTENSION_RESOLVED
    (resolved,) = await slow.sweep_due()  # due by the database's clock
    assert resolved.id == ext_id and resolved.via_timeout


async def test_a_skewed_worker_sets_the_deadline_by_the_database_clock(
    store: SqlAlchemyStore,
) -> None:
    await store.seed_session(make_session("s1", expires_at=await database_now(store)))
    await store.seed_payment(make_payment("p1"))
    before = await database_now(store)
    fast = make_service(store, VirtualClock(SystemClock().now() + SKEW))

    ext = await fast.request_extension(
        session_id="s1",
        customer_id="c1",
        duration_minutes=30,
        price=15000,
        extension_payment_session_id="p1",
    )

    assert before <= ext.requested_at < before + SKEW
    assert ext.expires_at == ext.requested_at + timedelta(seconds=ext.timeout_seconds)


async def test_the_clock_option(pg_url: str) -> None:
    local = await SqlAlchemyStore.open(pg_url, clock="local")
    lite = await SqlAlchemyStore.open("sqlite://", clock="database")
    try:
        assert not local.uses_database_clock
        assert not lite.uses_database_clock  # SQLite has no clock of its own to share
    finally:
        await local.aclose()
        await lite.aclose()
    with pytest.raises(ValueError, match="clock"):
        await SqlAlchemyStore.open("sqlite://", clock="wall")  # type: ignore[arg-type]
