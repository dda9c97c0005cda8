"""Engines per dialect, the transaction primitive, and the error translation.

SQLite: every transaction is ``BEGIN IMMEDIATE`` (it takes the single write
lock up front, so a unit of work never fails half-way on a lock upgrade) with
a busy timeout (10 s; ``?timeout=`` in the URL sets it), and units of
work in one process queue on an ``asyncio.Lock`` rather than on the file
lock.  A file database runs in WAL
mode with ``synchronous=FULL``; ``sqlite://`` is one shared in-memory
connection.

PostgreSQL: ``REPEATABLE READ`` transactions, so a unit of work that writes a
row another committed transaction changed since its snapshot fails with a
serialization error; that, deadlocks and lock timeouts become
:class:`~extension_fsm.errors.ConcurrencyConflict` and the service re-runs
the call on fresh state.
"""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from ...errors import ConcurrencyConflict, ErrorCode, ExtensionError
from .schema import Tables
from .urls import is_memory_sqlite, to_async_url

__all__ = ["Database", "StorageError", "create_engine"]

#: serialization_failure, deadlock_detected, lock_not_available
_RETRYABLE_SQLSTATES = {"40001", "40P01", "55P03"}
_SQLITE_BUSY_S = 10.0


class StorageError(Exception):
    """A database error that is neither a lost race nor a refused request
    (connection lost, schema missing, a bug); the driver's error is chained."""


def create_engine(url: str | URL) -> AsyncEngine:
    """An async engine for ``url`` configured as the module docstring says."""
    u = to_async_url(url)
    if u.get_backend_name() != "sqlite":
        return create_async_engine(u, isolation_level="REPEATABLE READ")
    memory = is_memory_sqlite(u)
    # ``?timeout=seconds`` in the URL (the driver's busy handler) overrides the default.
    connect_args: dict[str, Any] = {} if "timeout" in u.query else {"timeout": _SQLITE_BUSY_S}
    kwargs: dict[str, Any] = {"connect_args": connect_args}
    if memory:
        connect_args["check_same_thread"] = False
        kwargs["poolclass"] = StaticPool
    engine = create_async_engine(u, **kwargs)

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the driver; "begin" below emits ours.
        dbapi_connection.isolation_level = None
        if not memory:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = FULL")
            cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


class Database:
    """An engine, its tables, and how to run one transaction on it."""

    def __init__(self, engine: AsyncEngine, tables: Tables) -> None:
        self.engine = engine
        self.tables = tables
        self.is_postgres = engine.dialect.name == "postgresql"
        # SQLite has one writer; queue in-process instead of spinning on the file lock.
        self._lock = None if self.is_postgres else asyncio.Lock()

    async def begin(self) -> AsyncConnection:
        """A connection inside a new transaction (release with :meth:`finish`)."""
        if self._lock is not None:
            await self._lock.acquire()
        conn: AsyncConnection | None = None
        try:
            conn = await self.engine.connect()
            await conn.begin()
        except BaseException as err:
            if conn is not None:
                await conn.close()
            if self._lock is not None:
                self._lock.release()
            if isinstance(err, DBAPIError):
                raise self.translate(err) from err
            raise
        return conn

    async def finish(self, conn: AsyncConnection, *, commit: bool) -> None:
        """Commit (translating a lost race) or roll back, then give the connection back."""
        try:
            if commit:
                await conn.commit()
            else:
                await conn.rollback()
        except DBAPIError as err:
            raise self.translate(err) from err
        finally:
            try:
                await conn.close()
            finally:
                if self._lock is not None:
                    self._lock.release()

    def translate(self, err: DBAPIError) -> Exception:
        """The library's exception for a driver error (see the module docstring)."""
        message = str(err.orig)
        t = self.tables
        if isinstance(err, IntegrityError):
            x, ledger = t.extensions.name, t.ledger.name
            if t.pending_session_index in message or f"{x}.session_id" in message:
                return ExtensionError(
                    ErrorCode.EXTENSION_PENDING, "An extension request is already pending"
                )
            if t.live_payment_index in message or f"{x}.payment_session_id" in message:
                return ExtensionError(
                    ErrorCode.PAYMENT_IN_USE, "Payment session already backs another extension"
                )
            if t.ledger_extension_index in message or f"{ledger}.extension_id" in message:
                return ConcurrencyConflict(f"extension already charged: {message}")
        sqlstate = getattr(err.orig, "sqlstate", None) or getattr(err.orig, "pgcode", None)
        if sqlstate in _RETRYABLE_SQLSTATES:
            return ConcurrencyConflict(message)
        lowered = message.lower()
        if not self.is_postgres and ("locked" in lowered or "busy" in lowered):
            return ConcurrencyConflict(message)
        return StorageError(message)
