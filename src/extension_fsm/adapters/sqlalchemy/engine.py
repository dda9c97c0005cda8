"""Engines per dialect, the transaction primitive, and the error translation.

SQLite: every transaction is ``BEGIN IMMEDIATE`` (it takes the single write
lock up front, so a unit of work never fails half-way on a lock upgrade), and
units of work in one process queue on an ``asyncio.Lock`` rather than on the
file lock.  A file database runs in WAL mode with ``synchronous=FULL``;
``sqlite://`` is one shared in-memory connection.

By default (``sqlite://``, ``+pysqlite``) statements run on the event loop's
own thread: a SQLite statement takes microseconds, a hand-off to a driver
thread and back about a hundred (bench/).  The loop never waits on another
process's lock: ``BEGIN IMMEDIATE`` is tried without a busy wait and, while
another process writes, tried again after an ``asyncio.sleep`` until the busy
timeout (10 s; ``?timeout=`` in the URL sets it).  Inside the transaction the
write lock is held, so nothing waits; only the commit's ``fsync`` touches the
disk.  ``+aiosqlite`` keeps every call off the loop instead (one thread
hand-off per driver call, with the driver's own busy timeout).

PostgreSQL: ``REPEATABLE READ`` transactions, so a unit of work that writes a
row another committed transaction changed since its snapshot fails with a
serialization error; that, deadlocks and lock timeouts become
:class:`~extension_fsm.errors.ConcurrencyConflict` and the service re-runs
the call on fresh state.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from ...errors import ConcurrencyConflict, ErrorCode, ExtensionError
from .schema import Tables
from .urls import is_inline_sqlite, is_memory_sqlite, resolve_url

__all__ = ["Database", "InlineConnection", "StorageError", "TxConnection", "create_engine"]

T = TypeVar("T")

#: serialization_failure, deadlock_detected, lock_not_available
_RETRYABLE_SQLSTATES = {"40001", "40P01", "55P03"}
_SQLITE_BUSY_S = 10.0
_BUSY_FIRST_S, _BUSY_MAX_S = 0.001, 0.05


class StorageError(Exception):
    """A database error that is neither a lost race nor a refused request
    (connection lost, schema missing, a bug); the driver's error is chained."""


class TxConnection(Protocol):
    """What a unit of work needs of a connection (an ``AsyncConnection`` has it)."""

    async def execute(self, statement: Any, parameters: Any = None) -> Any: ...

    async def commit(self) -> None: ...

    async def rollback(self) -> None: ...

    async def close(self) -> None: ...


class InlineConnection:
    """A sync connection behind the awaitable calls of :class:`TxConnection`;
    each call runs to completion on the caller's thread."""

    __slots__ = ("sync",)

    def __init__(self, sync: Connection) -> None:
        self.sync = sync

    async def execute(self, statement: Any, parameters: Any = None) -> Any:
        return self.sync.execute(statement, parameters)

    async def commit(self) -> None:
        self.sync.commit()

    async def rollback(self) -> None:
        self.sync.rollback()

    async def close(self) -> None:
        self.sync.close()


def create_engine(url: str | URL) -> AsyncEngine | Engine:
    """The engine for ``url`` configured as the module docstring says: a
    sync :class:`~sqlalchemy.engine.Engine` for inline SQLite, else async."""
    u = resolve_url(url)
    if u.get_backend_name() != "sqlite":
        return create_async_engine(u, isolation_level="REPEATABLE READ")
    memory, inline = is_memory_sqlite(u), is_inline_sqlite(u)
    connect_args: dict[str, Any] = {}
    if inline:  # never a busy wait on the loop: Database.begin retries instead
        connect_args["timeout"] = 0
    elif "timeout" not in u.query:  # the driver's busy handler, in its own thread
        connect_args["timeout"] = _SQLITE_BUSY_S
    kwargs: dict[str, Any] = {"connect_args": connect_args}
    if memory:
        connect_args["check_same_thread"] = False
        kwargs["poolclass"] = StaticPool
    engine = create_sync_engine(u, **kwargs) if inline else create_async_engine(u, **kwargs)
    sync_engine = engine if isinstance(engine, Engine) else engine.sync_engine

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the driver; "begin" below emits ours.
        dbapi_connection.isolation_level = None
        if not memory:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = FULL")
            cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _busy_seconds(url: URL) -> float:
    raw = url.query.get("timeout")
    if isinstance(raw, tuple):
        raw = raw[-1]
    return float(raw) if raw is not None else _SQLITE_BUSY_S


class Database:
    """An engine, its tables, and how to run one transaction on it."""

    def __init__(self, engine: AsyncEngine | Engine, tables: Tables) -> None:
        self.engine = engine
        self.tables = tables
        self.is_postgres = engine.dialect.name == "postgresql"
        #: statements run on the loop's thread (sync SQLite engine)
        self.is_inline = isinstance(engine, Engine)
        self._busy_s = _busy_seconds(engine.url)
        self._held: Connection | None = None
        # SQLite has one writer; queue in-process instead of spinning on the file lock.
        self._lock = None if self.is_postgres else asyncio.Lock()

    async def begin(self) -> TxConnection:
        """A connection inside a new transaction (release with :meth:`finish`)."""
        if self._lock is not None:
            await self._lock.acquire()
        try:
            return await self._begin()
        except BaseException:
            if self._lock is not None:
                self._lock.release()
            raise

    async def _begin(self) -> TxConnection:
        if isinstance(self.engine, Engine):
            return await self._begin_inline(self.engine)
        conn = await self.engine.connect()
        try:
            await conn.begin()
        except BaseException as err:
            await conn.close()
            if isinstance(err, DBAPIError):
                raise self.translate(err) from err
            raise
        return conn

    async def _begin_inline(self, engine: Engine) -> TxConnection:
        deadline, pause = time.monotonic() + self._busy_s, _BUSY_FIRST_S
        while True:
            # Units of work take turns on the lock, so one connection serves them
            # all (no pool checkout and reset per transaction).
            conn = self._held if self._held is not None else engine.connect()
            self._held = None
            try:
                conn.begin()
                return InlineConnection(conn)
            except DBAPIError as err:
                conn.close()
                failure = self.translate(err)
                if not isinstance(failure, ConcurrencyConflict) or time.monotonic() >= deadline:
                    raise failure from err
            except BaseException:
                conn.close()
                raise
            await asyncio.sleep(pause)  # another process writes: let the loop run meanwhile
            pause = min(pause * 2, _BUSY_MAX_S)

    async def finish(self, conn: TxConnection, *, commit: bool) -> None:
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
                if (
                    isinstance(conn, InlineConnection)
                    and not conn.sync.invalidated
                    and not conn.sync.in_transaction()
                ):
                    self._held = conn.sync  # kept for the next unit of work
                else:
                    await conn.close()
            finally:
                if self._lock is not None:
                    self._lock.release()

    async def run_sync(self, fn: Callable[[Connection], T]) -> T:
        """``fn(connection)`` in one committed transaction (schema work, inspection)."""
        if isinstance(self.engine, Engine):
            with self.engine.begin() as conn:
                return fn(conn)
        async with self.engine.begin() as aconn:
            return await aconn.run_sync(fn)

    async def dispose(self) -> None:
        """Close every pooled connection."""
        if isinstance(self.engine, Engine):
            held, self._held = self._held, None
            if held is not None:
                held.close()
            self.engine.dispose()
        else:
            await self.engine.dispose()

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
        if sqlstate == "22P02" or "invalid input for query argument" in message:
            # An id that is no uuid, on a host's uuid column (the seed layout).
            return ExtensionError(ErrorCode.VALIDATION_ERROR, "Malformed id")
        if sqlstate in _RETRYABLE_SQLSTATES:
            return ConcurrencyConflict(message)
        lowered = message.lower()
        if not self.is_postgres and ("locked" in lowered or "busy" in lowered):
            return ConcurrencyConflict(message)
        return StorageError(message)
