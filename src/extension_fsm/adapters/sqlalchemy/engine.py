"""The transaction primitive: a connection inside one transaction, and back.

:class:`Database` holds an engine (built by :func:`~.dialects.create_engine`,
configured per dialect) and its tables, begins and finishes the transaction
of each unit of work, and translates driver errors (:mod:`.failures`).

SQLite: units of work in one process queue on an ``asyncio.Lock`` rather
than on the file lock.  By default (``sqlite://``, ``+pysqlite``) statements
run on the event loop's own thread: a SQLite statement takes microseconds, a
hand-off to a driver thread and back about a hundred (bench/).  The loop
never waits on another process's lock: ``BEGIN IMMEDIATE`` is tried without
a busy wait and, while another process writes, tried again after an
``asyncio.sleep`` until the busy timeout (10 s; ``?timeout=`` in the URL sets
it).  Inside the transaction the write lock is held, so nothing waits; only
the commit's ``fsync`` touches the disk.  ``+aiosqlite`` keeps every call off
the loop instead (one thread hand-off per driver call, with the driver's own
busy timeout).

PostgreSQL: a lost race, a deadlock or a lock timeout is a
:class:`~extension_fsm.errors.ConcurrencyConflict` and the service re-runs
the call on fresh state; a database that cannot be reached in time is a
retryable :class:`~extension_fsm.errors.StorageError`.
:meth:`Database.create_schema` holds a transaction-level advisory lock, so
instances starting together on an empty database create the tables once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, Protocol, TypeVar

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ...errors import ConcurrencyConflict, StorageError, StoreClosed
from .dialects import create_engine, sqlite_busy_seconds
from .failures import FAILED_MESSAGE as FAILED_MESSAGE  # re-exported: older imports
from .failures import UNAVAILABLE_MESSAGE as UNAVAILABLE_MESSAGE
from .failures import translate
from .failures import unavailable as unavailable
from .schema import Tables

__all__ = ["Database", "InlineConnection", "StorageError", "TxConnection", "create_engine"]

T = TypeVar("T")

_log = logging.getLogger(__name__)

_BUSY_FIRST_S, _BUSY_MAX_S = 0.001, 0.05
#: the advisory lock key that serialises create_schema across instances
_SCHEMA_LOCK_KEY = 0x657874_66736D  # "ext" "fsm"


class TxConnection(Protocol):
    """What a unit of work needs of a connection (an ``AsyncConnection`` has it)."""

    async def execute(self, statement: Any, parameters: Any = None) -> Any: ...

    async def commit(self) -> None: ...

    async def rollback(self) -> None: ...

    async def close(self) -> None: ...

    async def invalidate(self) -> None: ...


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

    async def invalidate(self) -> None:
        self.sync.invalidate()


class Database:
    """An engine, its tables, and how to run one transaction on it."""

    def __init__(self, engine: AsyncEngine | Engine, tables: Tables) -> None:
        self.engine = engine
        self.tables = tables
        self.is_postgres = engine.dialect.name == "postgresql"
        #: statements run on the loop's thread (sync SQLite engine)
        self.is_inline = isinstance(engine, Engine)
        self._busy_s = sqlite_busy_seconds(engine.url)
        self._held: Connection | None = None
        self._closed = False
        # Work holding (or opening) a connection: dispose() waits for it, so
        # no connection is left to the garbage collector with its socket open.
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._autocommit = (
            engine.execution_options(isolation_level="AUTOCOMMIT")
            if isinstance(engine, AsyncEngine)
            else None
        )
        # SQLite has one writer; queue in-process instead of spinning on the file lock.
        self._lock = None if self.is_postgres else asyncio.Lock()

    async def begin(self) -> TxConnection:
        """A connection inside a new transaction (release with :meth:`finish`)."""
        self._enter()
        try:
            if self._lock is not None:
                await self._lock.acquire()
            try:
                return await self._begin()
            except BaseException:
                if self._lock is not None:
                    self._lock.release()
                raise
        except BaseException:
            self._leave()
            raise

    async def _begin(self) -> TxConnection:
        if isinstance(self.engine, Engine):
            return await self._begin_inline(self.engine)
        try:
            conn = await self.engine.connect()
        except (DBAPIError, OSError, PoolTimeout) as err:
            raise self.translate(err) from err
        try:
            await conn.begin()
        except BaseException as err:
            await conn.close()
            if isinstance(err, DBAPIError | OSError):
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
                await self._drop_if_closed(conn)
                if (
                    not self._closed
                    and isinstance(conn, InlineConnection)
                    and not conn.sync.invalidated
                    and not conn.sync.in_transaction()
                ):
                    self._held = conn.sync  # kept for the next unit of work
                else:
                    await conn.close()
            finally:
                if self._lock is not None:
                    self._lock.release()
                self._leave()

    @asynccontextmanager
    async def autocommit(self) -> AsyncIterator[Any]:
        """A pooled connection outside any transaction (PostgreSQL, one
        statement at a time); refused once the database is closed."""
        if self._autocommit is None:
            raise TypeError("autocommit needs an async engine")
        self._enter()
        try:
            async with self._autocommit.connect() as conn:
                try:
                    yield conn
                finally:
                    await self._drop_if_closed(conn)
        finally:
            self._leave()

    async def run_sync(self, fn: Callable[[Connection], T]) -> T:
        """``fn(connection)`` in one committed transaction (schema work, inspection)."""
        self._enter()
        try:
            if isinstance(self.engine, Engine):
                with self.engine.begin() as conn:
                    return fn(conn)
            async with self.engine.connect() as aconn:
                try:
                    async with aconn.begin():
                        return await aconn.run_sync(fn)
                finally:
                    await self._drop_if_closed(aconn)
        finally:
            self._leave()

    async def create_schema(self, create: Callable[[Connection], Any] | None = None) -> None:
        """Create every missing table and index (``create``, by default the
        metadata's ``create_all``); safe from several instances at once.

        PostgreSQL: under a transaction-level advisory lock, at READ COMMITTED so
        that an instance which waited for the lock sees the tables the first one
        committed.  SQLite: the transaction takes the write lock up front
        (``BEGIN IMMEDIATE``); a busy database is tried again until the busy
        timeout.  A database that cannot be reached is a :class:`StorageError`.
        """
        create_all = create or self.tables.metadata.create_all
        self._enter()
        try:
            if isinstance(self.engine, Engine):
                await self._create_inline(self.engine, create_all)
            else:
                await self._create(self.engine, create_all)
        finally:
            self._leave()

    async def _create(self, engine: AsyncEngine, create_all: Callable[[Connection], Any]) -> None:
        try:
            async with engine.connect() as aconn:
                try:
                    if self.is_postgres:
                        await aconn.execution_options(isolation_level="READ COMMITTED")
                    async with aconn.begin():
                        if self.is_postgres:
                            lock = text("SELECT pg_advisory_xact_lock(:key)")
                            await aconn.execute(lock, {"key": _SCHEMA_LOCK_KEY})
                        await aconn.run_sync(create_all)
                finally:
                    await self._drop_if_closed(aconn)
        except (DBAPIError, OSError, PoolTimeout) as err:
            raise self.translate(err) from err

    async def _create_inline(self, engine: Engine, create_all: Callable[[Connection], Any]) -> None:
        deadline, pause = time.monotonic() + self._busy_s, _BUSY_FIRST_S
        while True:
            try:
                with engine.begin() as conn:
                    create_all(conn)
                return
            except DBAPIError as err:
                failure = self.translate(err)
                if not isinstance(failure, ConcurrencyConflict) or time.monotonic() >= deadline:
                    raise failure from err
            await asyncio.sleep(pause)  # another process holds the write lock
            pause = min(pause * 2, _BUSY_MAX_S)

    async def _drop_if_closed(self, conn: TxConnection | AsyncConnection) -> None:
        """Close the driver's connection of work that outlived :meth:`dispose`
        (given back to the disposed pool, it would stay open until the GC)."""
        if self._closed:
            await conn.invalidate()

    def _enter(self) -> None:
        # A closed engine would open a fresh pool on demand and leak it: a late
        # caller (a background delivery outliving its store) is refused instead.
        if self._closed:
            raise StoreClosed()
        self._in_flight += 1
        self._idle.clear()

    def _leave(self) -> None:
        self._in_flight -= 1
        if self._in_flight == 0:
            self._idle.set()

    async def dispose(self, *, grace: float = 10.0) -> None:
        """Refuse new work, wait up to ``grace`` seconds for the work holding a
        connection to give it back, then close every pooled connection.

        A connection still out after the grace (its statement outlived the
        driver's own timeouts) is closed by its holder when it finishes.
        """
        self._closed = True
        if self._in_flight:
            try:
                await asyncio.wait_for(self._idle.wait(), grace)
            except TimeoutError:
                _log.warning(
                    "closing the database with %d unit(s) of work still running", self._in_flight
                )
        if isinstance(self.engine, Engine):
            held, self._held = self._held, None
            if held is not None:
                held.close()
            self.engine.dispose()
        else:
            await self.engine.dispose()

    def translate(self, err: DBAPIError | OSError | PoolTimeout) -> Exception:
        """The library's exception for a driver error (see :mod:`.failures`)."""
        return translate(err, self.tables, is_postgres=self.is_postgres)
