"""The engine for a URL, configured per dialect.

SQLite: every transaction is ``BEGIN IMMEDIATE`` (it takes the single write
lock up front, so a unit of work never fails half-way on a lock upgrade).  A
file database runs in WAL mode with ``synchronous=FULL``; ``sqlite://`` is
one shared in-memory connection.  By default (``sqlite://``, ``+pysqlite``)
the engine is a sync one with no busy wait in the driver: the
:class:`~.engine.Database` runs its statements on the event loop's thread and
tries a busy ``BEGIN`` again itself.  ``+aiosqlite`` gets the driver's own
busy timeout instead (10 s unless ``?timeout=`` in the URL says otherwise).

PostgreSQL: ``REPEATABLE READ`` transactions, so a unit of work that writes a
row another committed transaction changed since its snapshot fails with a
serialization error (see :mod:`.failures` for what it becomes).  A pooled
connection is checked when it leaves the pool (a connection that died while
the database was away is replaced, not handed out: see
:func:`_check_pooled_asyncpg`), and every wait is bounded: connecting, each
statement (the server's ``statement_timeout``, and asyncpg's own limit for a
server that does not answer at all) and waiting for a pooled connection
(:class:`~.urls.PgTimeouts`, set in the URL).
"""

from __future__ import annotations

import math
import time
from typing import Any

from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy import event
from sqlalchemy.engine import URL, Engine, ExceptionContext
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool
from sqlalchemy.util import await_only

from .failures import unavailable
from .urls import (
    is_inline_sqlite,
    is_memory_sqlite,
    resolve_url,
    split_asyncpg_options,
    split_pg_timeouts,
)

__all__ = ["create_engine", "sqlite_busy_seconds"]

#: how long a SQLite transaction waits for another process's write lock
_SQLITE_BUSY_S = 10.0
#: a pooled asyncpg connection idle longer than this is pinged before use
_PING_IDLE_S = 2.0


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
        url, options = split_asyncpg_options(url)
        connect_args.update(options.connect)
        connect_args["timeout"] = limits.connect or None
        connect_args["command_timeout"] = limits.command or None
        connect_args["server_settings"] = {
            **options.server_settings,
            "statement_timeout": statement_ms,
        }
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


def sqlite_busy_seconds(url: URL) -> float:
    """How long a SQLite transaction on ``url`` waits for another process's
    write lock: ``?timeout=`` in the URL, else 10 s."""
    raw = url.query.get("timeout")
    if isinstance(raw, tuple):
        raw = raw[-1]
    return float(raw) if raw is not None else _SQLITE_BUSY_S
