"""Shared by the poison-row and presence tests: a store of each kind, seeded in
bulk with due extensions, and the host's own writes (statuses this library does
not know, deleted sessions, rows that do not parse) done as a host would do them.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, insert, select, update

from extension_fsm import ExtensionService
from extension_fsm.adapters.clock import VirtualClock
from extension_fsm.adapters.config import StaticConfig
from extension_fsm.adapters.memory import (
    MemoryPresence,
    MemoryPush,
    MemorySessionTimer,
    MemorySockets,
    MemoryStore,
)
from extension_fsm.adapters.sqlalchemy import SqlAlchemyStore
from extension_fsm.adapters.sqlalchemy.rows import (
    _extension_values,
    _payment_values,
    _session_values,
)
from extension_fsm.model import (
    Extension,
    ExtensionStatus,
    Participant,
    PaymentStatus,
    SessionStatus,
)
from extension_fsm.simulator import make_payment, make_session
from extension_fsm.testing.samples import add_committed
from tests.integration.sql_support import private_postgres_database

T0 = datetime(2026, 1, 1, tzinfo=UTC)
KINDS = ["memory", "sqlite", "postgres"]


class Host:
    """One store and the host's hand on its rows."""

    def __init__(self, kind: str, store: MemoryStore | SqlAlchemyStore) -> None:
        self.kind = kind
        self.store = store

    @property
    def sql(self) -> SqlAlchemyStore:
        assert isinstance(self.store, SqlAlchemyStore)
        return self.store

    @property
    def memory(self) -> MemoryStore:
        assert isinstance(self.store, MemoryStore)
        return self.store

    async def seed_due(
        self, n: int, *, tag: str = "d", mitra: str = "m1", expires_at: datetime = T0
    ) -> list[str]:
        """``n`` pending extensions due at ``expires_at``, on ``extending`` sessions
        with confirmed payments; their ids, oldest first."""
        sessions, payments, exts = [], [], []
        for i in range(n):
            sid, pid, xid = f"{tag}s{i:04d}", f"{tag}p{i:04d}", f"{tag}x{i:04d}"
            sessions.append(
                make_session(
                    sid,
                    customer_id=f"{tag}c{i}",
                    mitra_id=mitra,
                    status=SessionStatus.EXTENDING,
                    expires_at=T0,
                )
            )
            payments.append(make_payment(pid, customer_id=f"{tag}c{i}"))
            exts.append(
                Extension(
                    xid,
                    sid,
                    30,
                    15000,
                    pid,
                    ExtensionStatus.PENDING,
                    expires_at - timedelta(seconds=10),
                    expires_at,
                    10,
                )
            )
        if isinstance(self.store, MemoryStore):
            for s in sessions:
                self.store.add_session(s)
            for p in payments:
                self.store.add_payment(p)
            await add_committed(self.store, *exts)
        else:
            t = self.store.tables
            async with self.store.unit_of_work() as uow:
                await uow.execute(insert(t.sessions), [_session_values(s) for s in sessions])
                await uow.execute(insert(t.payments), [_payment_values(p) for p in payments])
                await uow.execute(insert(t.extensions), [_extension_values(x) for x in exts])
                await uow.commit()
        return [x.id for x in exts]

    async def _sql_write(self, stmt: Any) -> None:
        async with self.sql.unit_of_work() as uow:
            await uow.execute(stmt)
            await uow.commit()

    async def set_session_status(self, session_id: str, raw: str) -> None:
        """The host writes a session status of its own (``suspended``)."""
        if self.kind == "memory":
            old = self.memory.sessions[session_id]
            self.memory.add_session(replace(old, status=SessionStatus.UNKNOWN, unknown_status=raw))
            return
        t = self.sql.tables.sessions
        await self._sql_write(update(t).where(t.c.id == session_id).values(status=raw))

    async def set_payment_status(self, payment_id: str, raw: str) -> None:
        """The host writes a payment status of its own (``refunded``)."""
        if self.kind == "memory":
            old = self.memory.payments[payment_id]
            self.memory.add_payment(replace(old, status=PaymentStatus.UNKNOWN, unknown_status=raw))
            return
        t = self.sql.tables.payments
        await self._sql_write(update(t).where(t.c.id == payment_id).values(status=raw))

    async def delete_sessions(self, session_ids: list[str]) -> None:
        """The host deletes session rows (or hides them behind a soft-delete view)."""
        if self.kind == "memory":
            for sid in session_ids:
                del self.memory.sessions[sid]
            return
        t = self.sql.tables.sessions
        await self._sql_write(delete(t).where(t.c.id.in_(session_ids)))

    async def raw_status(self, table: str, row_id: str) -> str:
        """The status text as stored (SQL), or the model's status (memory)."""
        if self.kind == "memory":
            rows: dict[str, Any] = getattr(self.memory, table)
            row = rows[row_id]
            return str(row.unknown_status or row.status.value)
        t = getattr(self.sql.tables, table)
        async with self.sql.unit_of_work() as uow:
            found = await uow.first(select(t.c.status).where(t.c.id == row_id))
        assert found is not None
        return str(found[0])

    async def set_aside_of(self, extension_id: str) -> tuple[datetime | None, int]:
        """(``set_aside_until``, ``set_aside_count``) of an extension."""
        if self.kind == "memory":
            aside = self.memory.set_aside.get(extension_id)
            return (aside[0], aside[1]) if aside else (None, 0)
        t = self.sql.tables.extensions
        async with self.sql.unit_of_work() as uow:
            row = await uow.first(
                select(t.c.set_aside_until, t.c.set_aside_count).where(t.c.id == extension_id)
            )
        assert row is not None
        return row[0], int(row[1])


def make_service(
    store: MemoryStore | SqlAlchemyStore,
    clock: VirtualClock,
    *,
    presence: Any = None,
    sockets: Any = None,
    mitras_online: tuple[str, ...] = ("m1",),
) -> ExtensionService:
    """A service without timers (sweep only), the given mitras reachable."""
    if sockets is None:
        sockets = MemorySockets()
        for m in mitras_online:
            sockets.connected[(Participant.MITRA, m)] = True
    if presence is None:
        presence = MemoryPresence(online=dict.fromkeys(mitras_online, True))
    return ExtensionService(
        store,
        clock=clock,
        config=StaticConfig(),
        sockets=sockets,
        presence=presence,
        push=MemoryPush(),
        session_timer=MemorySessionTimer(),
    )


async def requested(
    store: MemoryStore | SqlAlchemyStore,
    clock: VirtualClock,
    *,
    session_end: datetime = T0 + timedelta(minutes=5),
) -> tuple[ExtensionService, Extension]:
    """Session ``s1`` (customer ``c1``, mitra ``m1``, ending at ``session_end``)
    with payment ``p1`` and one pending extension of 30 minutes at 15,000,
    requested through :func:`make_service` on ``clock``: the service and it."""
    await store.seed_session(make_session("s1", expires_at=session_end))
    await store.seed_payment(make_payment("p1"))
    service = make_service(store, clock)
    ext = await service.request_extension(
        session_id="s1",
        customer_id="c1",
        duration_minutes=30,
        price=15000,
        extension_payment_session_id="p1",
    )
    return service, ext


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    import psycopg

    with private_postgres_database("poison") as url:
        # Thousands of small outbox commits per test: durability is not under test.
        with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(
                "ALTER ROLE CURRENT_USER IN DATABASE "
                + _db_name(url)
                + " SET synchronous_commit = off"
            )
        yield url


def _db_name(url: str) -> str:
    from sqlalchemy.engine import make_url

    return '"' + str(make_url(url).database) + '"'


@pytest.fixture(params=KINDS)
async def host(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Host]:
    if request.param == "memory":
        yield Host("memory", MemoryStore())
        return
    # SQLite in memory: the outbox's many small commits cost no fsync.
    url = "sqlite://" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    prefix = f"h{uuid.uuid4().hex[:8]}_"
    store = await SqlAlchemyStore.open(url, create_schema=True, table_prefix=prefix, clock="local")
    try:
        yield Host(request.param, store)
    finally:
        await store.aclose()
