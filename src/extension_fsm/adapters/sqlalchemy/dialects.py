"""The engine for a URL, configured per dialect.

SQLite: a sync :class:`~sqlalchemy.engine.Engine` on the standard driver
(pysqlite), run by :class:`~.engine.SqliteDatabase` on a worker thread of its
own.  Every transaction is ``BEGIN IMMEDIATE`` (SQLAlchemy's documented
pysqlite recipe: the driver's own transaction handling is switched off and the
``begin`` event emits ours), so a unit of work takes the single write lock up
front and never fails half-way on a lock upgrade.  Another process's lock is
waited for by the driver's busy timeout (10 s, or ``?timeout=`` in the URL),
on the worker thread, never on the event loop.  A file database runs in WAL
mode with ``synchronous=FULL``; ``sqlite://`` is one shared in-memory
connection.

PostgreSQL: an :class:`~sqlalchemy.ext.asyncio.AsyncEngine` on asyncpg.
At most ``?pool_size=`` connections (10).  Every wait is bounded
(:class:`~.urls.PgTimeouts`, set in the URL):
connecting, each statement (the server's ``statement_timeout``, and asyncpg's
own ``command_timeout`` for a server that does not answer at all) and waiting
for a pooled connection, and each wait for another transaction's row lock
(``lock_timeout``, 2 s).  A socket error or a timeout is marked as a
disconnect, so SQLAlchemy invalidates the connection and every pooled
connection older than it: after an outage the pool holds no dead connection
(see :func:`~.failures.lost_connection` and :mod:`.engine` for the retry).
A decision call's read and write each run in autocommit; a unit of work
that sets a row aside runs ``REPEATABLE READ``, set per connection
by the unit of work, so the same holds on an engine a host passes in.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy import event
from sqlalchemy.engine import URL, Engine, ExceptionContext
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from .urls import is_memory_sqlite, resolve_url, split_asyncpg_options, split_pg_timeouts

__all__ = ["postgres_engine", "sqlite_engine"]

#: how long a SQLite transaction waits for another process's write lock
SQLITE_BUSY_S = 10.0
#: PostgreSQL connections the store's pool keeps at most (``?pool_size=`` sets it)
DEFAULT_POOL_SIZE = 10


def sqlite_engine(url: str | URL) -> Engine:
    """A sync pysqlite engine for ``url``, configured as the module docstring says."""
    u = resolve_url(url)
    connect_args: dict[str, Any] = {"check_same_thread": False}  # made and used on the worker
    if "timeout" not in u.query:
        connect_args["timeout"] = SQLITE_BUSY_S
    kwargs: dict[str, Any] = {"connect_args": connect_args}
    memory = is_memory_sqlite(u)
    if memory:
        kwargs["poolclass"] = StaticPool
    engine = create_sync_engine(u, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the driver; "begin" below emits ours.
        dbapi_connection.isolation_level = None
        if not memory:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = FULL")
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def postgres_engine(url: str | URL) -> AsyncEngine:
    """An asyncpg engine for ``url`` with every wait bounded."""
    u, limits = split_pg_timeouts(resolve_url(url))
    u, options = split_asyncpg_options(u)
    raw = u.query.get("pool_size", str(DEFAULT_POOL_SIZE))
    text = raw[-1] if isinstance(raw, tuple) else raw
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"pool_size must be a whole number >= 1, not {text!r}")
    u = u.difference_update_query(["pool_size"])
    connect_args: dict[str, Any] = dict(options.connect)
    connect_args["timeout"] = limits.connect or None
    connect_args["command_timeout"] = limits.command or None
    connect_args["server_settings"] = {
        # Every statement planned for its values: the claims find a call's rows
        # by id and the due rows by partial index, and a generic plan picked on
        # a table that grew faster than its statistics scanned the backlog
        # (a call's outbox claim took 24 ms with 6,000 open rows, 1.8 ms so).
        "plan_cache_mode": "force_custom_plan",
        **options.server_settings,
        "statement_timeout": str(round(limits.statement * 1000)),
        "lock_timeout": str(round(limits.lock * 1000)),
    }
    engine = create_async_engine(
        u,
        pool_size=int(text),
        max_overflow=0,  # a bound, not a hint
        pool_timeout=limits.pool or None,
        connect_args=connect_args,
    )

    @event.listens_for(engine.sync_engine, "handle_error")
    def _on_error(ctx: ExceptionContext) -> None:
        # asyncpg raises OSError / TimeoutError as they are (no DBAPI wrapper):
        # the connection is gone or stuck, so SQLAlchemy drops it (and the
        # pool's older ones); the error itself is translated by the engine.
        if not ctx.is_pre_ping and isinstance(ctx.original_exception, OSError):
            ctx.is_disconnect = True

    return engine
