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
the call on fresh state.  A pooled connection is checked when it leaves the
pool (a connection that died while the database was away is replaced, not
handed out: see :func:`_check_pooled_asyncpg`), and every wait is bounded: connecting, each
statement (the server's ``statement_timeout``, and asyncpg's own limit for a
server that does not answer at all) and waiting for a pooled connection
(:class:`~.urls.PgTimeouts`, set in the URL).  Running out of any of them, a
refused or dropped connection, or a server shutting down is a
:class:`~extension_fsm.errors.StorageError` with ``retryable`` set (code
``STORAGE_UNAVAILABLE``, 503).  :meth:`Database.create_schema` holds a
transaction-level advisory lock, so instances starting together on an empty
database create the tables once.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy import event, text
from sqlalchemy.engine import URL, Connection, Engine, ExceptionContext
from sqlalchemy.exc import DBAPIError, DisconnectionError, IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool
from sqlalchemy.util import await_only

from ...errors import ConcurrencyConflict, ErrorCode, ExtensionError, StorageError
from .schema import Tables
from .urls import is_inline_sqlite, is_memory_sqlite, resolve_url, split_pg_timeouts

__all__ = ["Database", "InlineConnection", "StorageError", "TxConnection", "create_engine"]

T = TypeVar("T")

#: serialization_failure, deadlock_detected, lock_not_available
_RETRYABLE_SQLSTATES = {"40001", "40P01", "55P03"}
_SQLITE_BUSY_S = 10.0
_BUSY_FIRST_S, _BUSY_MAX_S = 0.001, 0.05
#: SQLSTATE classes and codes that mean "the database is not there right now":
#: connection exceptions, insufficient resources (too many connections),
#: operator intervention (shutdown, statement or idle timeouts), system errors
_UNAVAILABLE_SQLSTATES = ("08", "53", "57", "58", "25P03")
#: the advisory lock key that serialises create_schema across instances
_SCHEMA_LOCK_KEY = 0x657874_66736D  # "ext" "fsm"
#: a pooled asyncpg connection idle longer than this is pinged before use
_PING_IDLE_S = 2.0

UNAVAILABLE_MESSAGE = "The database is unavailable or did not answer in time; try again later"
FAILED_MESSAGE = "The database failed the request"


def unavailable(err: BaseException) -> StorageError:
    """The retryable :class:`StorageError` for ``err`` (chain it with ``from``)."""
    failure = StorageError(UNAVAILABLE_MESSAGE, retryable=True)
    failure.__cause__ = err
    return failure


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
        return _postgres_engine(u)
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


def _postgres_engine(url: URL) -> AsyncEngine:
    """PostgreSQL: REPEATABLE READ, checked pooled connections, bounded waits."""
    url, limits = split_pg_timeouts(url)
    statement_ms = str(round(limits.statement * 1000))
    connect_args: dict[str, Any] = {}
    asyncpg = url.get_driver_name() == "asyncpg"
    if asyncpg:
        connect_args["timeout"] = limits.connect or None
        connect_args["command_timeout"] = limits.command or None
        connect_args["server_settings"] = {"statement_timeout": statement_ms}
    else:  # psycopg: libpq parameters
        if limits.connect:
            connect_args["connect_timeout"] = max(1, math.ceil(limits.connect))
        connect_args["options"] = f"-c statement_timeout={statement_ms}"
    engine = create_async_engine(
        url,
        isolation_level="REPEATABLE READ",
        # asyncpg: the cheaper check below; SQLAlchemy's ping costs three round
        # trips on every checkout there (a third more time per unit of work).
        pool_pre_ping=not asyncpg,
        pool_timeout=limits.pool or None,
        connect_args=connect_args,
    )
    if asyncpg:
        _check_pooled_asyncpg(engine.sync_engine)

    @event.listens_for(engine.sync_engine, "handle_error")
    def _on_error(ctx: ExceptionContext) -> None:
        # asyncpg raises OSError / TimeoutError as they are (no DBAPI wrapper):
        # the connection is gone or stuck, so drop it and say "unavailable".
        # Driver errors are left to Database.translate; a failed pre-ping is
        # the pool's to handle (it reconnects).
        err = ctx.original_exception
        if ctx.is_pre_ping or ctx.sqlalchemy_exception is not None:
            return
        if isinstance(err, OSError):
            ctx.is_disconnect = True
            raise unavailable(err)

    return engine


def _check_pooled_asyncpg(engine: Engine) -> None:
    """Hand out no pooled asyncpg connection that died while it waited: one
    whose socket the server (or the network) closed is seen at no cost; one
    idle for longer than ``_PING_IDLE_S`` also answers a ``SELECT 1`` first
    (a link that went silent).  A dead one is replaced by a new connection."""

    @event.listens_for(engine, "checkin")
    def _idle(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _alive(_dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        driver = record.driver_connection
        if driver is None or driver.is_closed():
            raise DisconnectionError("pooled connection closed meanwhile")
        idle_since = record.info.pop("idle_since", None)
        if idle_since is not None and time.monotonic() - idle_since > _PING_IDLE_S:
            try:
                await_only(driver.execute("SELECT 1"))
            except Exception as err:
                raise DisconnectionError("pooled connection does not answer") from err


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
        self._closed = False
        # SQLite has one writer; queue in-process instead of spinning on the file lock.
        self._lock = None if self.is_postgres else asyncio.Lock()

    async def begin(self) -> TxConnection:
        """A connection inside a new transaction (release with :meth:`finish`)."""
        self._refuse_if_closed()
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
        self._refuse_if_closed()
        if isinstance(self.engine, Engine):
            with self.engine.begin() as conn:
                return fn(conn)
        async with self.engine.begin() as aconn:
            return await aconn.run_sync(fn)

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
        if isinstance(self.engine, Engine):
            await self._create_inline(self.engine, create_all)
            return
        try:
            async with self.engine.connect() as aconn:
                if self.is_postgres:
                    await aconn.execution_options(isolation_level="READ COMMITTED")
                async with aconn.begin():
                    if self.is_postgres:
                        lock = text("SELECT pg_advisory_xact_lock(:key)")
                        await aconn.execute(lock, {"key": _SCHEMA_LOCK_KEY})
                    await aconn.run_sync(create_all)
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

    def _refuse_if_closed(self) -> None:
        # A closed engine would open a fresh pool on demand and leak it: a late
        # caller (a background delivery outliving its store) is refused instead.
        if self._closed:
            raise StorageError("the store is closed")

    async def dispose(self) -> None:
        """Close every pooled connection; the database refuses work afterwards."""
        self._closed = True
        if isinstance(self.engine, Engine):
            held, self._held = self._held, None
            if held is not None:
                held.close()
            self.engine.dispose()
        else:
            await self.engine.dispose()

    def translate(self, err: DBAPIError | OSError | PoolTimeout) -> Exception:
        """The library's exception for a driver error (see the module docstring)."""
        if not isinstance(err, DBAPIError):  # no connection, or no answer in time
            return unavailable(err)
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
        if self.is_postgres and _unreachable(err, sqlstate):
            return unavailable(err)
        failure = StorageError(FAILED_MESSAGE)
        failure.__cause__ = err
        return failure


def _unreachable(err: DBAPIError, sqlstate: str | None) -> bool:
    """Whether a PostgreSQL driver error means the server is away, not a fault."""
    if err.connection_invalidated:
        return True
    if sqlstate:
        return sqlstate.startswith(_UNAVAILABLE_SQLSTATES)
    # No SQLSTATE: the driver failed before the server answered (psycopg's
    # connection failures, asyncpg's closed-connection interface errors).
    return isinstance(err, OperationalError) or "connection is closed" in str(err.orig)
