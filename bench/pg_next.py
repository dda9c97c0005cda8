"""The measured next step for the PostgreSQL accept (bench/ANALYSIS.md, "Measured next step").

``python -m bench.pg_next`` runs, in one process and one database, the same
accept seven ways, alternating (each repeat rotates the order), on the seed of
the PostgreSQL accept case (:func:`bench.raw_sql.seed_rows`):

- ``shipped`` (a): ``ExtensionService.respond_to_extension`` over ``SqlAlchemyStore``
  on asyncpg directly: BEGIN, the joined SELECT, the one write statement, COMMIT
  (4 round trips);
- ``no-tx`` (b): the same service and decision over :class:`NoTxStore`, a prototype
  of the next step: the same joined SELECT outside any transaction, then one
  write statement (data-modifying CTEs, atomic on its own in autocommit) whose
  compare-and-set covers every column read from the three rows it updates, and
  which aborts itself, writing nothing, when any of them missed (2 round trips);
- ``no-tx-unguarded`` (b0): as b with the shipped write (status-only
  compare-and-set, NOT safe without a transaction): splits what dropping BEGIN
  and COMMIT saves from what the wider compare-and-set costs;
- ``psycopg`` (c): the 4-statement raw psycopg baseline (:func:`bench.raw_sql.pg_accept`
  with ``state_only``: BEGIN, 4 statements, COMMIT);
- ``asyncpg`` (d): the same 4 statements on a raw asyncpg connection;
- ``asyncpg-pool`` (d2): the same, held as the direct path holds a connection
  (pool checkout, per-call timeouts, REPEATABLE READ);
- ``psycopg-full`` (e): raw psycopg writing the audit and outbox rows too.

Wall time, this process's CPU (``time.process_time``) and, when readable, the
PostgreSQL backends' CPU, per accept; medians over the repeats, and ratios
paired by repeat.  Every run checks its own rows
(:func:`bench.raw_sql.check_accepted`).  Before measuring it proves the
prototype's guard (:func:`check_guard`): a change by another connection between
the read and the write, to one column of any of the three rows, committed or
in flight, makes the write statement write nothing.

``--profile N`` also runs a, b, c, d and d2 under ``cProfile`` (timed by
``time.process_time``) and prints each one's own time grouped by where the code
lives, the cumulative time of the parts of a call, and the top functions.
``--pieces N`` times the pieces of one accept alone, without a profiler.
``--check-only`` runs the guard's check only.

Nothing here is the library's decision path: the prototype subclasses the unit
of work in the benchmark only.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import re
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import psycopg
from sqlalchemy import (
    Boolean,
    Row,
    Table,
    and_,
    bindparam,
    case,
    cast,
    func,
    insert,
    literal_column,
    select,
    text,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import psycopg2

from extension_fsm.adapters.sqlalchemy import SqlAlchemyStore, SqlUnitOfWork
from extension_fsm.adapters.sqlalchemy.pg_direct import DirectConnection
from extension_fsm.adapters.sqlalchemy.rows import (
    _extension_values,
    _ledger_values,
    _outbox_values,
    _payment_values,
    _record_values,
    _session_values,
)
from extension_fsm.errors import ConcurrencyConflict, ErrorCode, ExtensionError
from extension_fsm.model import LedgerEntry, TransitionRecord
from extension_fsm.ports import OutboxMessage

from . import pg, raw_sql
from .cpu import Stopwatch, Timing
from .harness import check, median
from .service_kit import make_service
from .sql_cases import now, pg_connect, time_our_accepts, time_raw_accepts

#: what the write statement's own abort says (it is the text of a failed cast)
MISSED = "extension_fsm: compare-and-set missed"

# ------------------------------------------------------------ the prototype's write


@dataclass(frozen=True, slots=True)
class _Part:
    """One table's share of the write; ``was`` (every column as read) makes it a
    compare-and-set ``UPDATE`` of ``rows[0]`` on the row ``cas_id``."""

    name: str
    table: Table
    rows: Sequence[Mapping[str, Any]]
    cas_id: str | None = None
    was: Mapping[str, Any] | None = None


_NAMED_PG = psycopg2.dialect(paramstyle="named")  # type: ignore[no-untyped-call]
_CACHE: dict[tuple[Any, ...], Any] = {}


def _shape(parts: Sequence[_Part]) -> tuple[Any, ...]:
    return tuple(
        (p.name, p.table, tuple(p.was or ()), len(p.rows), tuple(p.rows[0])) for p in parts
    )


def _build(parts: Sequence[_Part]) -> Any:
    """``WITH x AS (UPDATE … WHERE id = … AND (every column read) IS NOT DISTINCT
    FROM (its value), …), … SELECT the counts WHERE every count is right``, and
    when one is not, the ``WHERE`` fails a cast: the statement errors and, being
    its own transaction, writes nothing."""
    ctes = []
    for p in parts:
        t = p.table
        if p.was is not None:
            dml: Any = (
                update(t)
                .where(
                    t.c.id == bindparam(f"{p.name}_cas_id", type_=t.c.id.type),
                    *[
                        t.c[k].is_not_distinct_from(
                            bindparam(f"{p.name}_was_{k}", type_=t.c[k].type)
                        )
                        for k in p.was
                        if k != "id"
                    ],
                )
                .values({c: bindparam(f"{p.name}_{c}", type_=t.c[c].type) for c in p.rows[0]})
            )
        else:
            dml = insert(t).values(
                [
                    {c: bindparam(f"{p.name}{i}_{c}", type_=t.c[c].type) for c in row}
                    for i, row in enumerate(p.rows)
                ]
            )
        ctes.append(dml.returning(literal_column("1").label("one")).cte(p.name))
    counts = select(
        *[select(func.count()).select_from(c).scalar_subquery().label(c.name) for c in ctes]
    ).subquery("n")
    right = and_(
        *[
            counts.c[p.name] == literal_column(str(1 if p.was is not None else len(p.rows)))
            for p in parts
        ]
    )
    # Not a constant (it reads the counts), so never folded at plan time: the
    # cast runs, and fails, only when a count is wrong.
    abort = cast(func.concat(literal_column(f"'{MISSED}: '"), *counts.c), Boolean)
    stmt = select(*counts.c).where(case((right, true()), else_=abort))
    compiled = stmt.compile(dialect=_NAMED_PG)
    sql = re.sub(r"(:\w+)::(\w+)", r"CAST(\1 AS \2)", compiled.string)
    return text(sql).bindparams(*compiled.binds.values())


def _params(parts: Sequence[_Part]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for p in parts:
        if p.was is not None:
            params[f"{p.name}_cas_id"] = p.cas_id
            params.update({f"{p.name}_was_{k}": v for k, v in p.was.items() if k != "id"})
            params.update({f"{p.name}_{c}": v for c, v in p.rows[0].items()})
        else:
            for i, row in enumerate(p.rows):
                params.update({f"{p.name}{i}_{c}": v for c, v in row.items()})
    return params


def write_statement(parts: Sequence[_Part]) -> Any:
    """The statement for ``parts`` (built once per shape)."""
    key = _shape(parts)
    stmt = _CACHE.get(key)
    if stmt is None:
        stmt = _CACHE[key] = _build(parts)
    return stmt


def _missed(err: BaseException) -> bool:
    seen: BaseException | None = err
    while seen is not None:
        if MISSED in str(seen):
            return True
        seen = seen.__cause__
    return False


class NoTxUnitOfWork(SqlUnitOfWork):
    """The prototype: no transaction.  A pooled connection in autocommit, the
    joined read on its own, then the one guarded write statement; "commit" only
    gives the connection back.  The compare-and-set of each updated row covers
    every column the joined read returned for it (``s_*``, ``x_*``, ``p_*``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read: Row[Any] | None = None
        #: called after the read, before the write (the guard's check races here)
        self.between: Callable[[], Awaitable[None]] | None = None
        #: called when the write aborted itself (a compare-and-set missed)
        self.on_missed: Callable[[], None] | None = None
        #: False: the shipped write (status-only CAS), NOT safe without a transaction
        self.guarded = True

    async def __aenter__(self) -> NoTxUnitOfWork:
        if self._conn is not None:
            raise RuntimeError("unit of work already entered")
        if self._direct is None:
            raise RuntimeError("the prototype runs on the asyncpg direct path only")
        self._conn = await self._direct.acquire()
        return self

    async def _finish(self, conn: Any, *, commit: bool) -> None:
        assert isinstance(conn, DirectConnection) and self._direct is not None
        await self._direct.release(conn)

    async def first(self, stmt: Any, params: Any = None) -> Row[Any] | None:
        row = await super().first(stmt, params)
        self._read = row
        return row

    def _was(self, prefix: str, table: Table, row_id: str) -> dict[str, Any]:
        read = self._read
        if read is None or getattr(read, f"{prefix}_id", None) != row_id:
            raise NotImplementedError(f"the prototype did not read {table.name} {row_id}")
        return {c.key: getattr(read, f"{prefix}_{c.key}") for c in table.c}

    async def _write_batch(
        self,
        extension: Any,
        session: Any,
        payment: Any,
        ledger: LedgerEntry | None,
        log: Sequence[TransitionRecord],
        outbox: Sequence[OutboxMessage],
    ) -> None:
        t = self.tables
        parts: list[_Part] = []
        for name, table, change, values in (
            ("x", t.extensions, extension, _extension_values),
            ("s", t.sessions, session, _session_values),
            ("p", t.payments, payment, _payment_values),
        ):
            if change is None:
                continue
            row: dict[str, Any] = values(change.row)
            if change.expected is None:
                parts.append(_Part(name, table, [row]))
                continue
            row_id = row.pop("id")
            parts.append(_Part(name, table, [row], row_id, self._was(name, table, row_id)))
        if ledger is not None:
            parts.append(_Part("l", t.ledger, [_ledger_values(ledger)]))
        parts.append(_Part("g", t.log, [_record_values(r) for r in log]))
        parts.append(_Part("o", t.outbox, [_outbox_values(m) for m in outbox]))
        if not self.guarded:  # the split only: the shipped write, status-only CAS
            await super()._write_batch(extension, session, payment, ledger, log, outbox)
            return
        parts = [p for p in parts if p.rows]
        if self.between is not None:
            await self.between()
        try:
            await self.execute(write_statement(parts), _params(parts))
        except Exception as err:
            if _missed(err):
                if self.on_missed is not None:
                    self.on_missed()
                raise ConcurrencyConflict("a row read for this decision moved") from err
            raise


class NoTxStore(SqlAlchemyStore):
    """``SqlAlchemyStore`` whose units of work are :class:`NoTxUnitOfWork`."""

    #: set by a check: the next unit of work calls it between its read and its write
    between: Callable[[], Awaitable[None]] | None = None
    #: writes that aborted themselves
    missed = 0
    #: False: :class:`NoTxUnitOfWork` with the shipped write (for the split only)
    guarded = True

    def unit_of_work(self) -> SqlUnitOfWork:
        uow = NoTxUnitOfWork(self._db, db_clock=self._db_clock, direct=self._direct)
        uow.between, self.between = self.between, None
        uow.on_missed = self._count_missed
        uow.guarded = self.guarded
        return uow

    def _count_missed(self) -> None:
        self.missed += 1


# ------------------------------------------------------------ the raw asyncpg side


async def asyncpg_accept(
    conn: Any, ext_id: str, session_id: str, mitra_id: str, at: datetime
) -> None:
    """:func:`bench.raw_sql.pg_accept` with ``state_only`` on asyncpg: BEGIN, the
    same 4 statements, COMMIT."""
    async with conn.transaction():
        await _four(conn, ext_id, session_id, mitra_id, at)


async def _four(conn: Any, ext_id: str, session_id: str, mitra_id: str, at: datetime) -> None:
    """The 4 statements of the raw accept, on asyncpg."""
    row = await conn.fetchrow(
        "UPDATE extensions SET status = 'accepted', responded_at = $1, "
        "via_timeout = false WHERE id = $2 AND session_id = $3 AND status = 'pending' "
        "RETURNING duration_minutes, price, payment_session_id",
        at,
        ext_id,
        session_id,
    )
    if row is None:
        raise RuntimeError("extension already resolved")
    minutes, price, payment_id = row
    done = await conn.execute(
        "UPDATE payment_sessions SET status = 'consumed' WHERE id = $1 AND status = 'confirmed'",
        payment_id,
    )
    if done != "UPDATE 1":
        raise RuntimeError("payment not confirmed")
    srow = await conn.fetchrow(
        "UPDATE chat_sessions SET status = 'active', closure_deadline = NULL, "
        "expires_at = GREATEST(expires_at, $1) + make_interval(mins => $2) "
        "WHERE id = $3 AND mitra_id = $4 AND status = 'extending' "
        "RETURNING customer_id, expires_at",
        at,
        minutes,
        session_id,
        mitra_id,
    )
    if srow is None:
        raise RuntimeError("session moved")
    await conn.execute(
        "INSERT INTO customer_transactions (customer_id, session_id, extension_id, type, "
        "amount, created_at) VALUES ($1, $2, $3, 'extension', $4, $5)",
        srow[0],
        session_id,
        ext_id,
        price,
        at,
    )


async def pooled_accept(
    pool: Any, ext_id: str, session_id: str, mitra_id: str, at: datetime
) -> None:
    """:func:`asyncpg_accept` on a connection held as the direct path holds one: a
    pool checkout (with a wait limit), ``BEGIN ISOLATION LEVEL REPEATABLE READ``
    and ``COMMIT`` as statements, the pool's ``command_timeout`` on each call."""
    conn = await pool.acquire(timeout=10.0)
    try:
        await conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        try:
            await _four(conn, ext_id, session_id, mitra_id, at)
        except BaseException:
            await conn.execute("ROLLBACK")
            raise
        await conn.execute("COMMIT")
    finally:
        await pool.release(conn)


async def open_pool(url: str) -> Any:
    """An asyncpg pool configured as :class:`~extension_fsm.adapters.sqlalchemy.pg_direct.PgDirect`
    configures its own (default timeouts, no reset round trip)."""

    async def keep(conn: Any) -> None:
        return None

    return await asyncpg.create_pool(
        url,
        min_size=0,
        max_size=10,
        reset=keep,
        timeout=5.0,
        command_timeout=12.0,
        server_settings={"statement_timeout": "10000"},
    )


async def time_asyncpg_accepts(
    apg: Any, conn: psycopg.Connection[Any], prefix: str, n: int, *, pooled: bool = False
) -> Timing:
    """Seed (untimed, psycopg COPY), accept each on asyncpg (timed), check;
    ``pooled``: ``apg`` is a pool, used as :func:`pooled_accept` does."""
    raw_sql.seed_pg(conn, raw_sql.seed_rows(prefix, n, pending=True, now=now()))
    accept = pooled_accept if pooled else asyncpg_accept
    watch = Stopwatch.around(conn).start()
    for i in range(n):
        await accept(apg, f"{prefix}e{i}", f"{prefix}s{i}", f"{prefix}m{i}", now())
    elapsed = watch.stop(n)
    raw_sql.check_accepted(conn, prefix, n, full=False)
    return elapsed


# ------------------------------------------------------------ the guard's check

#: one column of each row the accept updates, changed by another connection
#: between the read and the write (none of them is a status)
RACES = {
    "extension": "UPDATE extensions SET set_aside_reason = 'raced' WHERE id = %s",
    "session": "UPDATE chat_sessions SET expires_at = expires_at + interval '1 minute' "
    "WHERE id = %s",
    "payment": "UPDATE payment_sessions SET amount = amount + 1 WHERE id = %s",
}


def _state(conn: psycopg.Connection[Any], p: str) -> tuple[Any, ...]:
    """What an accept of ``{p}e0`` writes, and the columns the races change."""
    row = conn.execute(
        "SELECT x.status, x.set_aside_reason, s.status, s.expires_at, y.status, y.amount, "
        "(SELECT count(*) FROM customer_transactions WHERE extension_id = x.id), "
        "(SELECT count(*) FROM extension_transitions WHERE entity_id IN (x.id, s.id, y.id)), "
        "(SELECT count(*) FROM extension_outbox WHERE dedupe_key LIKE x.id || ':%%' "
        "OR dedupe_key LIKE s.id || ':%%') "
        "FROM extensions x JOIN chat_sessions s ON s.id = x.session_id "
        "JOIN payment_sessions y ON y.id = x.payment_session_id WHERE x.id = %s",
        (f"{p}e0",),
    ).fetchone()
    assert row is not None
    return tuple(row)


async def check_guard(url: str, *, guarded: bool = True) -> list[str]:
    """The prototype's write writes nothing when a row it read moved meanwhile.

    For each of the three rows, and each of two timings: read (the service's
    own load), then another connection changes one non-status column of that
    row, either committed before the write starts, or still in flight when it
    starts (the other transaction holds the row and commits 0.3 s later, while
    the write waits for it).  The service is given one attempt, so the lost
    race surfaces as ``CONFLICT``; it must come from the write's own abort.
    Every row the accept writes is then counted: none, no status moved, and the
    other connection's change is still there.  The same accept retried then
    succeeds on the new values.  Without a race the first attempt succeeds.

    ``guarded=False`` runs the shipped write (status-only compare-and-set)
    without a transaction instead: the check then fails (it can)."""
    store = await NoTxStore.open(url, create_schema=True, clock="local")
    assert isinstance(store, NoTxStore)
    store.guarded = guarded
    conn = pg_connect(url)
    lines: list[str] = []
    others: list[psycopg.Connection[Any]] = []
    cases = [(t, sql, mode) for mode in ("committed", "in flight") for t, sql in RACES.items()]
    try:
        one_try = make_service(store, id_prefix="k")
        one_try._max_attempts = 1  # the lost race is reported, not retried
        for k, (target, sql, mode) in enumerate([*cases, ("none", "", "")]):
            p = f"k{k}x"
            start = now()
            raw_sql.seed_pg(
                conn,
                raw_sql.seed_rows(
                    p, 1, pending=True, now=start, deadline=start + timedelta(hours=1)
                ),
            )
            before = _state(conn, p)
            rid = {"extension": f"{p}e0", "session": f"{p}s0", "payment": f"{p}p0"}.get(target)

            async def race(sql: str = sql, rid: str | None = rid, mode: str = mode) -> None:
                if mode == "committed":
                    conn.execute(sql, (rid,))  # autocommit: committed before the write
                    return
                other = psycopg.connect(url)  # a transaction of its own, left open
                others.append(other)
                other.execute(sql, (rid,))
                threading.Timer(0.3, other.commit).start()

            store.between = race if sql else None
            missed = store.missed

            async def accept(p: str = p) -> None:
                await one_try.respond_to_extension(
                    extension_id=f"{p}e0", session_id=f"{p}s0", mitra_id=f"{p}m0", accepted=True
                )

            if not sql:
                await accept()
                after = _state(conn, p)
                check(after[0] == "accepted" and after[6:] == (1, 3, 6), f"control: {after}")
                check(store.missed == missed, "the guard aborted a write with no race")
                lines.append(f"no race: accepted, rows written (ledger, audit, outbox) {after[6:]}")
                continue
            t0 = time.perf_counter()
            try:
                await accept()
            except ExtensionError as err:
                waited = time.perf_counter() - t0
                if mode == "in flight":  # the write waited for the other transaction
                    check(waited >= 0.25, f"{target}: the write did not wait ({waited:.3f} s)")
                check(err.code is ErrorCode.CONFLICT, f"{target}: {err.code}")
            else:
                raise AssertionError(f"{target} ({mode}): the write went through a moved row")
            check(store.missed == missed + 1, f"{target} ({mode}): not the write's own abort")
            raced = _state(conn, p)
            check(raced[0:6:2] == before[0:6:2], f"{target} ({mode}): a status moved: {raced}")
            check(raced[6:] == (0, 0, 0), f"{target} ({mode}): rows written: {raced[6:]}")
            check(raced != before, f"{target} ({mode}): the other connection's change is gone")
            await accept()
            retried = _state(conn, p)
            check(retried[6:] == (1, 3, 6), f"{target}: retry wrote {retried[6:]}")
            if target == "session":  # the new expiry is the moved one plus 15 minutes
                check(retried[3] == before[3] + timedelta(minutes=16), f"expiry {retried[3]}")
            if target == "payment":
                check(retried[5] == before[5] + 1, f"amount {retried[5]}")
            lines.append(
                f"{target} moved between read and write ({mode}): CONFLICT from the write's "
                f"own abort, rows written (ledger, audit, outbox) {raced[6:]}, no status moved; "
                "retried: accepted on the moved row"
            )
        await one_try.aclose()
    finally:
        for other in others:
            other.close()
        conn.close()
        await store.aclose()
    return lines


# ------------------------------------------------------------ the comparison

SIDES = (
    "shipped",
    "no-tx",
    "no-tx-unguarded",
    "psycopg",
    "asyncpg",
    "asyncpg-pool",
    "psycopg-full",
)
#: each side's ids start with its own prefix
_PREFIX = dict(zip(SIDES, ("sh", "nt", "nu", "pc", "ap", "aq", "pf"), strict=True))
#: what each side runs (the table's rows)
NAMES = {
    "shipped": "a. shipped: BEGIN, joined SELECT, one CTE write, COMMIT (4 round trips)",
    "no-tx": "b. prototype: joined SELECT, one guarded CTE write, no transaction (2)",
    "no-tx-unguarded": "b0. as b with the shipped write (status-only CAS: NOT safe; the split)",
    "psycopg": "c. raw psycopg: BEGIN, 4 statements, COMMIT (6)",
    "asyncpg": "d. raw asyncpg: BEGIN, the same 4 statements, COMMIT (6)",
    "asyncpg-pool": "d2. as d, held as ours: pool checkout, timeouts, REPEATABLE READ (6)",
    "psycopg-full": "e. raw psycopg, also 3 audit and 5 outbox rows: BEGIN, 6 statements, COMMIT",
}


@dataclass
class Compared:
    """Per side: the medians, and every repeat."""

    medians: dict[str, Timing]
    runs: dict[str, list[Timing]]


async def compare(url: str, repeats: int, n: int) -> Compared:
    shipped = await SqlAlchemyStore.open(url, create_schema=True, clock="local")
    no_tx = await NoTxStore.open(url, clock="local")
    unguarded = await NoTxStore.open(url, clock="local")
    assert isinstance(unguarded, NoTxStore)
    unguarded.guarded = False
    conn = pg_connect(url)
    apg = await asyncpg.connect(url)
    pool = await open_pool(url)
    seed = raw_sql.seed_pg
    services = {
        "shipped": make_service(shipped, id_prefix="a"),
        "no-tx": make_service(no_tx),
        "no-tx-unguarded": make_service(unguarded, id_prefix="u"),
    }
    runs: dict[str, list[Timing]] = {s: [] for s in SIDES}

    async def side(name: str, r: int, count: int) -> Timing:
        # no "_" (a LIKE wildcard in the checks) and a letter after the number: "pc1x"
        # never matches "pc10x…"
        p = f"{_PREFIX[name]}{r}x"
        if name in services:
            return await time_our_accepts(services[name], conn, seed, p, count)
        if name == "psycopg":
            return time_raw_accepts(conn, seed, raw_sql.pg_accept, p, count, state_only=True)
        if name == "psycopg-full":
            return time_raw_accepts(conn, seed, raw_sql.pg_accept, p, count)
        if name == "asyncpg-pool":
            return await time_asyncpg_accepts(pool, conn, p, count, pooled=True)
        return await time_asyncpg_accepts(apg, conn, p, count)

    try:
        for name in SIDES:  # connect, prepare, fill caches: untimed
            await side(name, -1, 10)
        for r in range(repeats):
            k = r % len(SIDES)
            for name in SIDES[k:] + SIDES[:k]:
                runs[name].append(await side(name, r, n))
    finally:
        for s in services.values():
            await s.aclose()
        await apg.close()
        await pool.close()
        conn.close()
        await shipped.aclose()
        await no_tx.aclose()
        await unguarded.aclose()
    return Compared({s: Timing.median(t) for s, t in runs.items()}, runs)


def table(c: Compared, repeats: int, n: int) -> str:
    """The medians, each side against c; "paired vs c" ("vs a"): the median over
    repeats of the side's time over c's (a's) in the same repeat."""
    base = c.medians["psycopg"]

    def paired(side: str, clock: str, against: str = "psycopg") -> float:
        return median(
            [
                getattr(t, clock) / getattr(b, clock)
                for t, b in zip(c.runs[side], c.runs[against], strict=True)
            ]
        )

    out = [
        f"{repeats} repeats of {n} accepts per side, alternating; medians per accept",
        "",
        "| side | wall µs | vs c | paired vs c | paired vs a | CPU µs (Python) | vs c "
        "| paired vs c | paired vs a | PostgreSQL backends' CPU µs |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for s in SIDES:
        t = c.medians[s]
        server = "n/a" if t.server is None else f"{t.server * 1e6:,.0f}"
        out.append(
            f"| {NAMES[s]} | {t.wall * 1e6:,.0f} | {t.wall / base.wall:.2f}x "
            f"| {paired(s, 'wall'):.2f}x | {paired(s, 'wall', 'shipped'):.2f}x "
            f"| {t.cpu * 1e6:,.0f} | {t.cpu / base.cpu:.2f}x "
            f"| {paired(s, 'cpu'):.2f}x | {paired(s, 'cpu', 'shipped'):.2f}x | {server} |"
        )
    out.append("")
    out.append("each repeat's wall µs / CPU µs:")
    for s in SIDES:
        out.append(
            f"- {s}: " + ", ".join(f"{t.wall * 1e6:,.0f}/{t.cpu * 1e6:,.0f}" for t in c.runs[s])
        )
    return "\n".join(out)


# ------------------------------------------------------------ the profile

_GROUPS = (
    ("asyncpg (protocol, codecs)", ("asyncpg",)),
    ("psycopg", ("psycopg",)),
    ("asyncio event loop, selectors, sockets", ("asyncio", "selectors", "socket", "ssl")),
    ("bench/ (b: the prototype's unit of work; c, d: the raw code)", ("bench/",)),
    ("extension_fsm core (decision)", ("extension_fsm/core", "extension_fsm/machine")),
    ("extension_fsm SQL adapter", ("extension_fsm/adapters",)),
    ("extension_fsm service, outbox, messages", ("extension_fsm/",)),
    ("SQLAlchemy (processors, rows)", ("sqlalchemy",)),
    ("json", ("json",)),
    ("uuid, datetime, enum, dataclasses", ("uuid", "datetime", "enum", "dataclasses")),
)


def _group(filename: str) -> str:
    for name, needles in _GROUPS:
        if any(f"/{n}" in filename or filename.startswith(n) for n in needles):
            return name
    if filename == "~":
        return "builtins (C: str, dict, method calls)"
    return "other"


#: (label, file ending, function): cumulative CPU (callees included) of the parts of a call
_PHASES = (
    ("the call (respond_to_extension)", "extension_fsm/service.py", "respond_to_extension"),
    ("read: joined SELECT, rows to models", "sqlalchemy/loads.py", "for_response"),
    ("decide (core.decide)", "extension_fsm/core/__init__.py", "decide"),
    ("outbox rows (encode_effects: JSON, ids)", "extension_fsm/outbox_codec.py", "encode_effects"),
    ("write: the decision's one statement", "sqlalchemy/unit.py", "_write_batch"),
    ("write: the guarded statement", "bench/pg_next.py", "_write_batch"),
    ("- parameters by name", "sqlalchemy/batch.py", "_params"),
    ("- parameters by name", "bench/pg_next.py", "_params"),
    ("- bind processors to positional args (Plan.args)", "sqlalchemy/pg_plans.py", "args"),
    ("- result processors (Plan.rows)", "sqlalchemy/pg_plans.py", "rows"),
    ("BEGIN (PgDirect.begin)", "sqlalchemy/pg_direct.py", "begin"),
    ("COMMIT, give back (PgDirect.finish)", "sqlalchemy/pg_direct.py", "finish"),
    ("asyncpg Connection._execute (encode, send)", "asyncpg/connection.py", "_execute"),
    ("after the commit (timers, deliver_soon)", "extension_fsm/service.py", "_after_commit"),
    ("metrics", "extension_fsm/metrics.py", "decided"),
)


def _profile_text(prof: cProfile.Profile, ops: int, top: int) -> str:
    stats = pstats.Stats(prof)
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in raw.values())
    groups: dict[str, float] = {}
    for (filename, _line, _fn), v in raw.items():
        groups[_group(filename)] = groups.get(_group(filename), 0.0) + v[2]
    lines = [f"own time under cProfile: {total / ops * 1e6:,.0f} µs per accept", ""]
    lines += ["| where | own µs per accept | share |", "| --- | --- | --- |"]
    for name, spent in sorted(groups.items(), key=lambda kv: -kv[1]):
        lines.append(f"| {name} | {spent / ops * 1e6:,.1f} | {spent / total:.0%} |")
    phases = [
        (label, v[3])
        for label, ending, name in _PHASES
        for (filename, _line, fn), v in raw.items()
        if fn == name and ending in filename
    ]
    if phases:
        lines += ["", "| part of the call | cumulative µs per accept |", "| --- | --- |"]
        lines += [f"| {label} | {spent / ops * 1e6:,.1f} |" for label, spent in phases]
    lines += ["", f"top {top} functions by own time (µs per accept, calls per accept):"]
    ranked = sorted(raw.items(), key=lambda kv: -kv[1][2])[:top]
    for (filename, line, fn), v in ranked:
        where = filename.split("site-packages/")[-1].split("/src/")[-1]
        lines.append(f"- {v[2] / ops * 1e6:7.1f}  {v[1] / ops:5.1f}  {where}:{line} {fn}")
    return "\n".join(lines)


async def profile(url: str, n: int, top: int) -> str:
    """Each side's accepts (only: seeding and checks are outside) under
    ``cProfile`` timed by ``time.process_time``, so waiting for the server costs
    nothing and what is left is this process's CPU."""
    store = await SqlAlchemyStore.open(url, create_schema=True, clock="local")
    no_tx = await NoTxStore.open(url, clock="local")
    conn = pg_connect(url)
    apg = await asyncpg.connect(url)
    pool = await open_pool(url)
    services = {"shipped": make_service(store, id_prefix="a"), "no-tx": make_service(no_tx)}
    titles = {
        "shipped": "a. shipped accept",
        "no-tx": "b. prototype (no transaction, guarded write)",
        "psycopg": "c. raw psycopg, 4 statements",
        "asyncpg": "d. raw asyncpg, 4 statements",
        "asyncpg-pool": "d2. raw asyncpg, 4 statements, held as ours (pool, timeouts)",
    }
    out = []

    async def one(side: str, p: str, i: int) -> None:
        ids = (f"{p}e{i}", f"{p}s{i}", f"{p}m{i}")
        if side in services:
            await services[side].respond_to_extension(
                extension_id=ids[0], session_id=ids[1], mitra_id=ids[2], accepted=True
            )
        elif side == "psycopg":
            raw_sql.pg_accept(conn, *ids, now(), state_only=True)
        elif side == "asyncpg-pool":
            await pooled_accept(pool, *ids, now())
        else:
            await asyncpg_accept(apg, *ids, now())

    try:
        for side in titles:
            for p, count in ((f"w{_PREFIX[side]}_", 10), (f"p{_PREFIX[side]}_", n)):
                start = now()
                raw_sql.seed_pg(
                    conn,
                    raw_sql.seed_rows(
                        p, count, pending=True, now=start, deadline=start + timedelta(hours=1)
                    ),
                )
                prof = cProfile.Profile(time.process_time)
                prof.enable()
                for i in range(count):
                    await one(side, p, i)
                prof.disable()
                raw_sql.check_accepted(conn, p, count, full=side in services)
            out.append(f"### {titles[side]}, {n} accepts\n\n" + _profile_text(prof, n, top))
    finally:
        for s in services.values():
            await s.aclose()
        await apg.close()
        await pool.close()
        conn.close()
        await store.aclose()
        await no_tx.aclose()
    return "\n\n".join(out)


async def pieces(url: str, loops: int) -> str:
    """The pieces of one shipped accept, each timed alone (``time.process_time``,
    no profiler) on the inputs captured from a real accept: the decision, the
    outbox rows, naming the write's parameters, binding each statement's
    parameters (``Plan.args``: the column types' bind processors, JSON included)
    and turning the read's record into a row (``Plan.rows``)."""
    from extension_fsm import core
    from extension_fsm import service as service_module
    from extension_fsm.adapters.sqlalchemy import batch, pg_direct
    from extension_fsm.adapters.sqlalchemy.pg_plans import Plan

    seen: dict[str, Any] = {"plans": []}
    real: dict[str, Any] = {
        "plan": pg_direct.PgDirect.plan,
        "decide": core.decide,
        "encode": service_module.encode_effects,  # type: ignore[attr-defined]
        "params": batch._params,
        "rows": Plan.rows,
    }

    def plan(self: Any, stmt: Any, given: Mapping[str, Any]) -> Any:
        found = real["plan"](self, stmt, given)
        seen["plans"].append((found, dict(given)))
        return found

    def capture(name: str) -> Callable[..., Any]:
        def wrapped(*args: Any) -> Any:
            seen[name] = [*seen.get(name, []), args] if name == "rows" else args
            return real[name](*args)

        return wrapped

    store = await SqlAlchemyStore.open(url, create_schema=True, clock="local")
    conn = pg_connect(url)
    service = make_service(store)
    try:
        await time_our_accepts(service, conn, raw_sql.seed_pg, "wpx", 5)
        pg_direct.PgDirect.plan = plan  # type: ignore[method-assign]
        core.decide = capture("decide")
        service_module.encode_effects = capture("encode")  # type: ignore[attr-defined]
        batch._params = capture("params")
        Plan.rows = capture("rows")  # type: ignore[method-assign]
        try:
            await time_our_accepts(service, conn, raw_sql.seed_pg, "cpx", 1)
        finally:
            pg_direct.PgDirect.plan = real["plan"]  # type: ignore[method-assign]
            core.decide = real["decide"]
            service_module.encode_effects = real["encode"]  # type: ignore[attr-defined]
            batch._params = real["params"]
            Plan.rows = real["rows"]  # type: ignore[method-assign]
    finally:
        await service.aclose()
        conn.close()
        await store.aclose()
    (read, read_given), (write, write_given) = seen["plans"]
    timed: list[tuple[str, Callable[[], Any]]] = [
        ("core.decide (the accept's decision)", lambda: real["decide"](*seen["decide"])),
        ("encode_effects (6 outbox rows)", lambda: real["encode"](*seen["encode"])),
        ("batch._params (the write's parameters by name)", lambda: real["params"](*seen["params"])),
        (
            f"Plan.args of the write ({len(write.names)} parameters, JSON included)",
            lambda: write.args(write_given, {}),
        ),
        (f"Plan.args of the read ({len(read.names)} parameters)", lambda: read.args(read_given)),
        ("Plan.rows of the read (one record, 31 columns)", lambda: real["rows"](*seen["rows"][0])),
    ]
    lines = [
        f"each piece run {loops:,} times alone; CPU µs per run",
        "",
        "| piece | CPU µs |",
        "| --- | --- |",
    ]
    for label, run in timed:
        run()
        t0 = time.process_time()
        for _ in range(loops):
            run()
        lines.append(f"| {label} | {(time.process_time() - t0) / loops * 1e6:,.1f} |")
    return "\n".join(lines)


# ------------------------------------------------------------ main


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pg_next", description=__doc__)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--ops", type=int, default=150, help="accepts per side and repeat")
    parser.add_argument("--check-only", action="store_true", help="the guard's check only")
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="profile N accepts")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument(
        "--pieces", type=int, default=0, metavar="N", help="time each piece of an accept N times"
    )
    args = parser.parse_args(argv)
    missing = pg.available()
    if missing is not None:
        print(missing, file=sys.stderr)
        return 1
    with pg.temporary_database() as url:
        for line in asyncio.run(check_guard(url)):
            print(f"guard: {line}")
    if args.check_only:
        return 0
    if args.pieces:
        with pg.temporary_database() as url:
            print(asyncio.run(pieces(url, args.pieces)))
        return 0
    started = time.perf_counter()
    with pg.temporary_database() as url:
        compared = asyncio.run(compare(url, args.repeats, args.ops))
    print()
    print(table(compared, args.repeats, args.ops))
    print(f"\n({time.perf_counter() - started:.0f} s)")
    if args.profile:
        with pg.temporary_database() as url:
            print()
            print(asyncio.run(profile(url, args.profile, args.top)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
