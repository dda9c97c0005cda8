"""The transaction primitive: one executor per backend, both through SQLAlchemy.

Every statement of the store is a plain function of a SQLAlchemy
:class:`~sqlalchemy.engine.Connection` (:mod:`.statements`, :mod:`.loads`,
:mod:`.outbox`); a :class:`Transaction` runs such functions inside one
database transaction, and the backend decides where they run:

- :class:`SqliteDatabase`: a sync engine (pysqlite) whose every call runs on
  one worker thread owned by the store, one hop per call (a unit of work's
  load, then its write together with its commit: two hops), so the event loop keeps
  running while SQLite works or waits for another process's write lock.
  Units of work of one store take turns on an ``asyncio.Lock`` (one writer at
  a time in SQLite anyway), so the worker never waits on its own store.
- :class:`PostgresDatabase`: an :class:`~sqlalchemy.ext.asyncio.AsyncEngine`
  on asyncpg, the store's own or a host's; each call is
  ``AsyncConnection.run_sync`` on the unit of work's connection, in a
  ``REPEATABLE READ`` transaction.  A lost race, a deadlock or a lock timeout
  is a :class:`~extension_fsm.errors.ConcurrencyConflict` and the service
  re-runs the call on fresh state.

**The one retry.**  A connection found dead (:func:`~.failures.lost_connection`)
by the first statement of a transaction, which only reads, is replaced and
that statement run again, once (``LOST_CONNECTION_RETRIES``): nothing was
written, so nothing can be doubled.  SQLAlchemy has already invalidated the
pool's older connections, so the retry gets a new one.  A connection lost
later in a transaction (it never committed) or during a ``COMMIT`` (its
outcome unknown) is never retried here: the call fails with a retryable
``StorageError`` (503) and the caller decides.  The outbox's single
statements pass ``retry=True`` only where running twice changes nothing.

Driver errors become the library's exceptions in :meth:`Database.translate`
(:mod:`.failures`).  :meth:`Database.create_schema` is safe from several
instances at once (PostgreSQL: a transaction-level advisory lock; SQLite: the
write lock taken up front).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ...errors import ConcurrencyConflict, StorageError, StoreClosed
from .dialects import SQLITE_BUSY_S
from .failures import lost_connection, translate
from .schema import Tables

__all__ = [
    "LOST_CONNECTION_RETRIES",
    "Database",
    "PostgresDatabase",
    "SqliteDatabase",
    "StorageError",
    "Transaction",
]

T = TypeVar("T")

_log = logging.getLogger(__name__)

#: how often the first (reading) statement of a transaction is run again on a
#: new connection when its pooled one turned out dead
LOST_CONNECTION_RETRIES = 1
#: the advisory lock key that serialises create_schema across instances
_SCHEMA_LOCK_KEY = 0x657874_66736D  # "ext" "fsm"
#: driver errors translated at this edge
_DRIVER_ERRORS = (DBAPIError, OSError, PoolTimeout)


class Transaction:
    """One database transaction: :meth:`run` functions of a connection in it,
    then :meth:`finish` it (commit or roll back)."""

    async def run(
        self, fn: Callable[[Connection], T], *, alone: bool = False, read_only: bool = False
    ) -> T:
        """``fn(connection)`` inside this unit of work; driver errors translated.

        ``alone``: ``fn`` runs one statement that is atomic on its own (a joined
        read, a decision's guarded write), so it needs no transaction around
        it: PostgreSQL runs it in autocommit, one round trip.  ``read_only``:
        running it twice changes nothing (it may be retried on a new
        connection when the pooled one turned out dead)."""
        raise NotImplementedError

    async def finish(
        self,
        *,
        commit: bool,
        last: Callable[[Connection], Any] | None = None,
        alone: bool = False,
    ) -> None:
        """Commit (a lost race is ``ConcurrencyConflict``) or roll back; always
        gives the connection back.  ``last``: run just before the commit
        (SQLite: in the same hop; PostgreSQL: on its own in autocommit when
        ``alone``, else in the transaction); if it raises, nothing of it
        is committed and its error is raised."""
        raise NotImplementedError


class Database:
    """An engine, its tables, and how to run one transaction on it."""

    is_postgres: bool

    def __init__(self, tables: Tables) -> None:
        self.tables = tables
        self._closed = False
        #: the close's grace ran out: work still open fails on its next call
        self.abandoned = False
        # Work holding (or opening) a connection: dispose() waits for it, so
        # no connection is left to the garbage collector with its socket open.
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def begin(self) -> Transaction:
        """A new transaction (end it with :meth:`Transaction.finish`)."""
        raise NotImplementedError

    async def one_statement(self, fn: Callable[[Connection], T], *, retry: bool = False) -> T:
        """``fn(connection)``, one statement atomic on its own (PostgreSQL: in
        autocommit, one round trip; SQLite: its own transaction).  ``retry``:
        the statement changes nothing when run twice, so a connection found
        dead is replaced and it runs again (``LOST_CONNECTION_RETRIES``)."""
        raise NotImplementedError

    async def run_sync(self, fn: Callable[[Connection], T]) -> T:
        """``fn(connection)`` in one committed transaction (schema work, inspection)."""
        tx = await self.begin()
        try:
            result = await tx.run(fn)
        except BaseException:
            await tx.finish(commit=False)
            raise
        await tx.finish(commit=True)
        return result

    async def create_schema(self, create: Callable[[Connection], Any] | None = None) -> None:
        """Create every missing table and index (``create``, by default the
        metadata's ``create_all``); safe from several instances at once."""
        raise NotImplementedError

    async def dispose(self, *, grace: float = 10.0) -> None:
        """Refuse new work, wait up to ``grace`` seconds for the work holding a
        connection to give it back, then close every pooled connection of an
        engine the store created (a host's engine is left as it is)."""
        self._closed = True
        if self._in_flight:
            try:
                await asyncio.wait_for(self._idle.wait(), grace)
            except TimeoutError:
                self.abandoned = True
                _log.warning(
                    "closing the database with %d unit(s) of work still running", self._in_flight
                )
        await self._dispose()

    async def _dispose(self) -> None:
        raise NotImplementedError

    def translate(self, err: DBAPIError | OSError | PoolTimeout) -> Exception:
        """The library's exception for a driver error (see :mod:`.failures`)."""
        return translate(err, self.tables, is_postgres=self.is_postgres)

    def _enter(self) -> None:
        # A disposed engine would open a fresh pool on demand and leak it: a late
        # caller (a background delivery outliving its store) is refused instead.
        if self._closed:
            raise StoreClosed()
        self._in_flight += 1
        self._idle.clear()

    def _leave(self) -> None:
        self._in_flight -= 1
        if self._in_flight == 0:
            self._idle.set()


# ---------------------------------------------------------------------- SQLite


class SqliteDatabase(Database):
    """SQLite on a sync engine, every call on one worker thread of this store."""

    is_postgres = False

    def __init__(self, engine: Engine, tables: Tables) -> None:
        super().__init__(tables)
        self.engine = engine
        raw = engine.url.query.get("timeout", SQLITE_BUSY_S)
        #: how long another process's write lock is waited for
        self.busy_seconds = float(raw[-1] if isinstance(raw, tuple) else raw)
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="extension-fsm-sqlite")
        self._turn = asyncio.Lock()
        self._disposed = False

    async def hop(self, fn: Callable[[], T]) -> T:
        """``fn()`` on the worker thread.  Shielded: a cancelled caller never
        cancels work queued there (a rollback must run); calls run in order."""
        future = asyncio.get_running_loop().run_in_executor(self._worker, fn)
        try:
            return await asyncio.shield(future)
        except _DRIVER_ERRORS as err:
            raise self.translate(err) from err

    async def begin(self) -> Transaction:
        self._enter()
        try:
            await self._turn.acquire()
        except BaseException:
            self._leave()
            raise
        return _SqliteTransaction(self)

    def _released(self) -> None:
        self._turn.release()
        self._leave()

    async def one_statement(self, fn: Callable[[Connection], T], *, retry: bool = False) -> T:
        return await self.run_sync(fn)  # nothing to lose on a file: no retry needed

    async def create_schema(self, create: Callable[[Connection], Any] | None = None) -> None:
        """``BEGIN IMMEDIATE`` takes the write lock first; another process's is
        waited for by the busy timeout.  But SQLite answers "database is
        locked" at once, without waiting, to a connection that switches a new
        file to WAL while another one holds a lock on it (several instances
        starting together on a new file): creating the schema changes nothing
        when run again, so it is tried again, until the busy timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.busy_seconds
        pause = 0.005
        while True:
            try:
                await self.run_sync(create or self.tables.metadata.create_all)
                return
            except ConcurrencyConflict:
                if loop.time() >= deadline:
                    raise
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.1)

    async def _dispose(self) -> None:
        if self._disposed:
            return
        self._disposed = True
        try:
            await asyncio.get_running_loop().run_in_executor(self._worker, self.engine.dispose)
        finally:
            self._worker.shutdown(wait=False)


class _SqliteTransaction(Transaction):
    """A connection of the worker thread; ``BEGIN IMMEDIATE`` with the first call."""

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db
        self._conn: Connection | None = None
        self._done = False

    def _connection(self) -> Connection:  # on the worker thread
        if self._conn is None:
            conn = self._db.engine.connect()
            try:
                conn.begin()
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    async def run(
        self, fn: Callable[[Connection], T], *, alone: bool = False, read_only: bool = False
    ) -> T:
        if self._done:
            raise RuntimeError("transaction already finished")
        return await self._db.hop(lambda: fn(self._connection()))

    async def finish(
        self,
        *,
        commit: bool,
        last: Callable[[Connection], Any] | None = None,
        alone: bool = False,
    ) -> None:
        if self._done:
            return
        self._done = True

        def end() -> None:  # on the worker thread
            if commit and last is not None:
                self._connection()  # the write may be the transaction's first call
            conn, self._conn = self._conn, None
            if conn is None:
                return
            try:
                if commit:
                    try:
                        if last is not None:
                            last(conn)
                    except BaseException:
                        conn.rollback()
                        raise
                    conn.commit()
                else:
                    conn.rollback()
            finally:
                conn.close()

        try:
            await self._db.hop(end)
        except Exception:
            if commit:
                raise
            _log.debug("rollback failed", exc_info=True)  # the caller's error is reported
        finally:
            self._db._released()


# ------------------------------------------------------------------ PostgreSQL


class PostgresDatabase(Database):
    """PostgreSQL on an :class:`AsyncEngine` (the store's, or a host's when
    ``owns_engine`` is false: then it is never disposed here)."""

    is_postgres = True

    def __init__(self, engine: AsyncEngine, tables: Tables, *, owns_engine: bool = True) -> None:
        super().__init__(tables)
        self.engine = engine
        self._owns_engine = owns_engine

    async def connect(self, isolation_level: str) -> AsyncConnection:
        """A pooled connection set to ``isolation_level`` (no round trip: the
        driver sends it with the transaction's ``BEGIN``)."""
        try:
            conn = await self.engine.connect()
        except _DRIVER_ERRORS as err:
            raise self.translate(err) from err
        try:
            await conn.execution_options(isolation_level=isolation_level)
        except BaseException:
            await conn.close()
            raise
        return conn

    async def begin(self) -> Transaction:
        self._enter()
        return _PostgresTransaction(self)

    async def one_statement(self, fn: Callable[[Connection], T], *, retry: bool = False) -> T:
        self._enter()
        try:
            for attempt in range(LOST_CONNECTION_RETRIES + 1):
                conn = await self.connect("AUTOCOMMIT")
                try:
                    return await conn.run_sync(fn)
                except _DRIVER_ERRORS as err:
                    if retry and lost_connection(err) and attempt < LOST_CONNECTION_RETRIES:
                        continue
                    raise self.translate(err) from err
                finally:
                    await _give_back(conn, self._closed)
            raise AssertionError("unreachable")
        finally:
            self._leave()

    async def create_schema(self, create: Callable[[Connection], Any] | None = None) -> None:
        """Under a transaction-level advisory lock, at READ COMMITTED so that an
        instance which waited for the lock sees the tables the first one committed."""
        create_all = create or self.tables.metadata.create_all

        def locked(conn: Connection) -> None:
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK_KEY})
            create_all(conn)

        self._enter()
        try:
            conn = await self.connect("READ COMMITTED")
            try:
                async with conn.begin():
                    await conn.run_sync(locked)
            except _DRIVER_ERRORS as err:
                raise self.translate(err) from err
            finally:
                await _give_back(conn, self._closed)
        finally:
            self._leave()

    async def _dispose(self) -> None:
        if self._owns_engine:
            await self.engine.dispose()


async def _give_back(conn: AsyncConnection, closed: bool) -> None:
    """Return ``conn`` to its pool; after :meth:`Database.dispose` close its driver
    connection instead (given back to a disposed pool, it would stay open)."""
    if closed:
        await conn.invalidate()
    await conn.close()


class _PostgresTransaction(Transaction):
    """A unit of work's connection: statements atomic on their own (``alone``:
    the joined reads, a decision's one guarded write) run in autocommit, one
    round trip each; the first other statement (a set-aside, the writes of
    several decisions committed together) opens a
    ``REPEATABLE READ`` transaction on a new pooled connection, and everything
    after it runs there until :meth:`finish`."""

    def __init__(self, db: PostgresDatabase) -> None:
        self._db = db
        self._conn: AsyncConnection | None = None
        self._in_tx = False
        self._tx_calls = 0
        self._failed = False  # the server aborted the transaction: COMMIT would roll back
        self._done = False

    async def _open_transaction(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:  # the autocommit connection: nothing open on it
            await _give_back(conn, self._db._closed)
        self._conn = await self._db.connect("REPEATABLE READ")
        await self._conn.begin()
        self._in_tx = True

    async def run(
        self, fn: Callable[[Connection], T], *, alone: bool = False, read_only: bool = False
    ) -> T:
        if self._done:
            raise RuntimeError("transaction already finished")
        if self._db.abandoned:  # the store closed past its grace under this work
            self._failed = True
            raise StorageError("the store closed during this unit of work", retryable=True)
        if not alone and not self._in_tx:
            await self._open_transaction()
        first = self._tx_calls == 0
        if self._in_tx:
            self._tx_calls += 1
        # Run again on a new connection when the pooled one turned out dead: a
        # read outside a transaction, or a transaction's first statement
        # (nothing was committed on it, so nothing can be doubled).
        may_retry = (self._in_tx and first) or (read_only and not self._in_tx)
        for attempt in range(LOST_CONNECTION_RETRIES + 1):
            if self._conn is None:
                if self._in_tx:
                    await self._open_transaction()
                else:
                    self._conn = await self._db.connect("AUTOCOMMIT")
            assert self._conn is not None
            try:
                return await self._conn.run_sync(fn)
            except _DRIVER_ERRORS as err:
                if may_retry and lost_connection(err) and attempt < LOST_CONNECTION_RETRIES:
                    # Nothing was written on it: a new connection reads again.
                    conn, self._conn = self._conn, None
                    await _drop(conn)
                    continue
                if self._in_tx:
                    self._failed = True
                raise self._db.translate(err) from err
        raise AssertionError("unreachable")

    async def finish(
        self,
        *,
        commit: bool,
        last: Callable[[Connection], Any] | None = None,
        alone: bool = False,
    ) -> None:
        if commit and last is not None and not self._done:
            try:
                await self.run(last, alone=alone)
            except BaseException:
                await self.finish(commit=False)
                raise
        if self._done:
            return
        self._done = True
        conn, self._conn = self._conn, None
        try:
            if conn is None:
                return
            if not self._in_tx:  # autocommit: every statement committed itself
                await _give_back(conn, self._db._closed)
                return
            if commit and self._failed:
                await _drop(conn)
                raise StorageError("the transaction had failed: nothing was committed")
            try:
                if commit:
                    await conn.commit()
                else:
                    await conn.rollback()
            except _DRIVER_ERRORS as err:
                await _drop(conn)
                if commit:
                    raise self._db.translate(err) from err
                # A failed rollback: the server ends the transaction with the
                # connection; the error that led here is the one to report.
                _log.debug("rollback failed; connection dropped", exc_info=True)
                return
            except BaseException:
                await _drop(conn)  # cancelled mid-COMMIT: the connection is not reused
                raise
            await _give_back(conn, self._db._closed)
        finally:
            self._db._leave()


async def _drop(conn: AsyncConnection) -> None:
    """Close a connection that failed (its driver connection is not pooled again)."""
    try:
        await conn.invalidate()
        await conn.close()
    except Exception:  # already gone: nothing more to close
        _log.debug("closing a failed connection failed", exc_info=True)
