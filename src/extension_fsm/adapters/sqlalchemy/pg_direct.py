"""PostgreSQL (asyncpg): units of work and the outbox straight on the driver.

What an accept costs on PostgreSQL is mostly not the database but Python:
SQLAlchemy's execution layer spends ~150 µs of CPU per statement where raw
asyncpg spends ~50 (bench/ANALYSIS.md).  As :mod:`.sqlite_direct` does for
SQLite, the statements are still written and compiled by SQLAlchemy, from
the same schema objects (:mod:`.schema`: prefix, mapped names and the seed
layout included), but compiled once per statement object, to ``$n`` SQL plus
the column types' own bind and result processors, and then run on a pooled
asyncpg connection:

- :class:`PgDirect` owns an asyncpg pool (``pool_size`` connections at most,
  opened on demand and kept: no connect per call) and opens units of work
  on it (``BEGIN ISOLATION LEVEL REPEATABLE READ`` … ``COMMIT``), or runs one
  autocommit statement (the outbox's claims and marks);
- :class:`DirectConnection` runs any SQLAlchemy Core statement or ``text()``
  on its connection and returns a small result (``all``, ``first``, ``one``,
  ``rowcount``) of named tuples, as SQLAlchemy's would be.

Everything the unit of work does runs here when the path is on: the joined
snapshot reads, the decision's one write statement (:mod:`.batch`), the
sweep's claim, the repositories.  SQLAlchemy's engine stays for the schema,
the migrations, the status queries and the ``direct=0`` path.

Every wait is bounded as on the SQLAlchemy path (:class:`~.urls.PgTimeouts`):
connecting, waiting for a pooled connection, each statement (the server's
``statement_timeout``, asyncpg's ``command_timeout``).  A driver error becomes
the library's exception through :meth:`~.engine.Database.translate`, so both
paths fail alike (``STORAGE_UNAVAILABLE`` 503, ``STORAGE_ERROR`` 500, 409s,
``ConcurrencyConflict``).  A connection that failed on the wire is
terminated, never handed out again; one returned to the pool is not reset
by a round trip (nothing here changes session state; an open transaction is
rolled back).  A task cancelled while it waits for a connection gives that
connection back to the pool; :meth:`PgDirect.aclose` closes the pool.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy.engine import URL, Dialect
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.sql import Select
from sqlalchemy.sql.elements import TextClause

from ...errors import StorageError, StoreClosed
from .engine import unavailable
from .pg_plans import DirectResult, Plan, compile_plan, rowcount
from .urls import split_asyncpg_options, split_pg_timeouts

__all__ = ["DEFAULT_POOL_SIZE", "DirectConnection", "DirectResult", "PgDirect"]

#: connections the pool keeps at most (a call holds one for its transaction)
DEFAULT_POOL_SIZE = 10
#: how long :meth:`PgDirect.aclose` waits for connections in use to come back, by default
_CLOSE_WAIT_S = 10.0
_BEGIN = "BEGIN ISOLATION LEVEL REPEATABLE READ"


def _asyncpg() -> Any:
    import asyncpg  # type: ignore[import-untyped]  # the ``postgres`` extra

    return asyncpg


class DirectConnection:
    """A pooled asyncpg connection; ``execute`` runs SQLAlchemy statements on it.

    Its errors are the library's (see the module docstring); ``broken`` says
    the connection failed on the wire and must not be reused."""

    __slots__ = ("_pg", "broken", "pool", "raw")

    def __init__(self, pg: PgDirect, raw: Any, pool: Any) -> None:
        self._pg = pg
        self.raw = raw
        self.pool = pool  # the pool it came from (the store may be closing meanwhile)
        self.broken = False

    async def execute(self, statement: Any, parameters: Any = None) -> DirectResult:
        many = isinstance(parameters, list)
        if many:
            given: Mapping[str, Any] = parameters[0] if parameters else {}
        else:
            given = parameters or {}
        plan = self._pg.plan(statement, given)
        sql = plan.sql
        try:
            memo: dict[Any, Any] = {}
            if many:
                if plan.lists is not None:
                    raise NotImplementedError("executemany with an IN list")
                await self.raw.executemany(sql, [plan.args(p, memo) for p in parameters])
                return DirectResult([], -1)
            if plan.lists is not None:
                sql, args = plan.expanded(given)
            else:
                args = plan.args(given, memo)
            if plan.returns_rows:
                records = await self.raw.fetch(sql, *args)
                return DirectResult(plan.rows(records), len(records))
            return DirectResult([], rowcount(await self.raw.execute(sql, *args)))
        except Exception as err:
            failure = self.failure(err, sql)
            if failure is err:
                raise
            raise failure from err

    def gone(self) -> bool:
        """Whether the connection is closed (a connection closed under us is also
        detached from its pool proxy, which then refuses every call)."""
        try:
            return bool(self.raw.is_closed())
        except _asyncpg().InterfaceError:
            return True

    def failure(self, err: Exception, sql: str | None = None) -> Exception:
        """The library's exception for ``err``; marks the connection broken when
        it failed on the wire."""
        failure = self._pg.failure(err, sql, self.gone())
        if isinstance(failure, StorageError) and failure.retryable:
            self.broken = True
        return failure


class PgDirect:
    """The asyncpg pool of one store and the statements compiled for it.

    ``translate`` is the store's :meth:`~.engine.Database.translate`.  The
    pool is created on first use, on the event loop that uses it."""

    def __init__(
        self,
        url: URL,
        dialect: Dialect,
        translate: Callable[[Any], Exception],
        *,
        pool_size: int = DEFAULT_POOL_SIZE,
    ) -> None:
        if pool_size < 1:
            raise ValueError(f"pool_size must be at least 1, not {pool_size}")
        url, limits = split_pg_timeouts(url)
        url, options = split_asyncpg_options(url)
        _, opts = dialect.create_connect_args(url)
        opts.update(options.connect)
        # SQLAlchemy's own option, not asyncpg's (PgBouncer setups give
        # ``?prepared_statement_cache_size=0``): here it sizes asyncpg's cache
        # of named prepared statements (0: unnamed statements only).
        cache_size = opts.pop("prepared_statement_cache_size", None)
        if cache_size is not None:
            opts["statement_cache_size"] = cache_size
        opts["timeout"] = limits.connect or None
        opts["command_timeout"] = limits.command or None
        opts["server_settings"] = {
            **options.server_settings,
            "statement_timeout": str(round(limits.statement * 1000)),
        }
        self.dialect = dialect
        self._translate = translate
        self._connect = opts
        self._pool_size = pool_size
        self._acquire_timeout = limits.pool or None
        self._pool: Any = None
        self._closed = False
        self._closing: asyncio.Event | None = None  # set once a close has ended
        self._plans: dict[tuple[int, tuple[str, ...] | None], Plan] = {}
        self._giving_back: set[asyncio.Task[None]] = set()
        # Connections handed out and not given back yet (aclose waits for them).
        self._in_use = 0
        self._all_back = asyncio.Event()
        self._all_back.set()

    # ------------------------------------------------------------ statements

    def plan(self, stmt: Any, given: Mapping[str, Any]) -> Plan:
        """``stmt`` compiled (once per statement object and parameter keys)."""
        dml = not isinstance(stmt, Select | TextClause)
        keys = tuple(given) if dml and given else None
        key = (id(stmt), keys)
        found = self._plans.get(key)
        if found is not None and found.stmt is stmt:
            return found
        plan = compile_plan(stmt, self.dialect, list(keys) if keys is not None else None)
        if len(self._plans) > 512:  # hot statements are few; one-off ones are not
            self._plans.clear()
        self._plans[key] = plan
        return plan

    def failure(self, err: Exception, sql: str | None, closed: bool) -> Exception:
        """The library's exception for a driver error (see the module docstring)."""
        asyncpg = _asyncpg()
        if isinstance(err, OSError | TimeoutError):  # no connection, or no answer in time
            return unavailable(err)
        if isinstance(err, asyncpg.PostgresError | asyncpg.InterfaceError):
            gone = closed or isinstance(err, asyncpg.exceptions.ConnectionDoesNotExistError)
            kind = (
                IntegrityError
                if isinstance(err, asyncpg.exceptions.IntegrityConstraintViolationError)
                else DBAPIError
            )
            return self._translate(kind(sql, None, err, connection_invalidated=gone))
        return err

    # ------------------------------------------------------------ connections

    async def _ready(self) -> Any:
        if self._closed:
            raise StoreClosed()
        if self._pool is None:
            asyncpg = _asyncpg()
            # min_size=0: nothing connects until a call needs it; what opens is kept.
            pool = asyncpg.create_pool(
                min_size=0,
                max_size=self._pool_size,
                init=_set_codecs,
                reset=_keep_session,
                **self._connect,
            )
            await pool  # no connection is opened here (min_size=0): never suspends
            self._pool = pool
        return self._pool

    async def acquire(self) -> DirectConnection:
        """A pooled connection (give it back with :meth:`release`)."""
        pool = await self._ready()
        getting = asyncio.ensure_future(pool.acquire(timeout=self._acquire_timeout))
        try:
            raw = await asyncio.shield(getting)
        except asyncio.CancelledError:
            # Cancelled while connecting or waiting: the connection, if one
            # arrives after all, goes back to the pool instead of leaking.
            getting.cancel()
            getting.add_done_callback(lambda done: self._give_back(pool, done))
            raise
        except Exception as err:
            failure = self.failure(err, None, False)
            if failure is err:
                raise
            raise failure from err
        self._in_use += 1
        self._all_back.clear()
        return DirectConnection(self, raw, pool)

    def _give_back(self, pool: Any, done: asyncio.Future[Any]) -> None:
        if done.cancelled() or done.exception() is not None:
            return
        task = asyncio.ensure_future(pool.release(done.result()))
        self._giving_back.add(task)
        task.add_done_callback(self._giving_back.discard)

    async def release(self, conn: DirectConnection) -> None:
        """Give ``conn`` back (terminated first when it is broken)."""
        try:
            if conn.broken and not conn.gone():
                conn.raw.terminate()
            await conn.pool.release(conn.raw)
        finally:
            self._in_use -= 1
            if self._in_use == 0:
                self._all_back.set()

    async def begin(self) -> DirectConnection:
        """A connection inside a new REPEATABLE READ transaction (end it with :meth:`finish`)."""
        conn = await self.acquire()
        try:
            await conn.raw.execute(_BEGIN)
        except BaseException as err:
            failure = conn.failure(err, _BEGIN) if isinstance(err, Exception) else err
            conn.broken = True
            await self.release(conn)
            if failure is err:
                raise
            raise failure from err
        return conn

    async def finish(self, conn: DirectConnection, *, commit: bool) -> None:
        """Commit (translating a lost race) or roll back, then give the connection back.

        A COMMIT of a transaction that had failed (a statement's error caught
        and the unit committed anyway) is answered ``ROLLBACK`` by the server:
        that is a ``StorageError``, not a commit."""
        status = ""
        try:
            if not conn.broken:
                status = await conn.raw.execute("COMMIT" if commit else "ROLLBACK")
            elif commit:
                raise StorageError("the connection failed during the transaction", retryable=True)
        except Exception as err:
            conn.broken = True
            failure = conn.failure(err, "COMMIT" if commit else "ROLLBACK")
            if failure is err:
                raise
            raise failure from err
        except BaseException:
            conn.broken = True  # cancelled mid-COMMIT: the outcome is unknown here
            raise
        finally:
            await self.release(conn)
        if commit and status == "ROLLBACK":
            raise StorageError("the transaction had failed: nothing was committed")

    async def run(self, stmt: Any, params: Any = None) -> DirectResult:
        """One statement on its own (autocommit: no BEGIN, no COMMIT)."""
        conn = await self.acquire()
        try:
            return await conn.execute(stmt, params)
        finally:
            await self.release(conn)

    async def aclose(self, grace: float = _CLOSE_WAIT_S) -> None:
        """Close every connection; the pool refuses work afterwards.

        Connections in use get up to ``grace`` seconds to come back; any still
        out then are closed under their holder (its next call fails with a
        retryable ``StorageError``; an open transaction is rolled back).  A
        second call while the first is closing returns when the first does."""
        if self._closing is not None:
            await self._closing.wait()
            return
        self._closing = asyncio.Event()
        try:
            await self._close(grace)
        finally:
            self._closing.set()

    async def _close(self, grace: float) -> None:
        self._closed = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(grace, 0.0)
        pool, self._pool = self._pool, None
        try:
            if self._giving_back:
                await asyncio.wait(list(self._giving_back), timeout=max(grace, 0.0))
            if pool is None:
                return
            if self._in_use:
                left = max(deadline - loop.time(), 0.0)
                try:
                    await asyncio.wait_for(self._all_back.wait(), left)
                except TimeoutError:
                    pool.terminate()  # still in use past the grace
                    return
            try:
                await asyncio.wait_for(pool.close(), _CLOSE_WAIT_S)  # idle ones: quick
            except TimeoutError:
                pool.terminate()
        except BaseException:
            # Cancelled or out of time: the pool is no longer reachable from
            # here, so its sockets are closed now rather than left to the GC.
            if pool is not None:
                pool.terminate()
            raise


async def _set_codecs(conn: Any) -> None:
    """JSON in and out as SQLAlchemy's asyncpg dialect sets it up: serialized by
    the column type's bind processor, parsed here."""

    def decode(raw: bytes) -> Any:
        return json.loads(raw.decode())

    def decode_jsonb(raw: bytes) -> Any:
        return json.loads(raw[1:].decode())

    def encode_jsonb(text: str) -> bytes:
        return b"\x01" + text.encode()

    await conn.set_type_codec(
        "json", encoder=str.encode, decoder=decode, schema="pg_catalog", format="binary"
    )
    await conn.set_type_codec(
        "jsonb", encoder=encode_jsonb, decoder=decode_jsonb, schema="pg_catalog", format="binary"
    )


async def _keep_session(conn: Any) -> None:
    """The pool's reset: nothing beyond asyncpg's own rollback of an open transaction
    (no ``RESET ALL`` round trip per call: nothing here changes session state)."""
