"""Durable cases: ``ExtensionService`` over ``SqlAlchemyStore`` against what a
host would write without the library, in the same database, alternating repeats.

- SQLite: raw ``sqlite3`` writing the same rows (the adapter's PRAGMAs: WAL,
  ``synchronous=FULL``; ``BEGIN IMMEDIATE``), outbox rows left undelivered on
  both sides.
- PostgreSQL: the whole call, its outbox delivered to in-memory sockets,
  against a hand-written SQLAlchemy async accept on the same engine
  (:mod:`bench.sa_baseline`) and raw psycopg's 4 state statements in a
  transaction (:mod:`bench.raw_sql`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy.ext.asyncio import AsyncEngine

from extension_fsm.service import ExtensionService

from . import pg, raw_sql, sa_baseline
from .contention import CONTENDED, busy_cores
from .cpu import Stopwatch, Timing, cpu_row
from .fakes import InMemorySockets
from .harness import Result, Sizes, check
from .service_kit import make_service, open_store, open_store_on


def now() -> datetime:
    """Wall-clock UTC (durable rows carry real times)."""
    return datetime.now(UTC)


# ------------------------------------------------------------ raw runners


def time_raw_accepts(
    conn: Any,
    seed: Callable[[Any, dict[str, list[tuple[Any, ...]]]], None],
    accept: Callable[..., Any],
    prefix: str,
    n: int,
    **kwargs: Any,
) -> Timing:
    """Seed ``n`` pending extensions (untimed), accept each (timed); seconds per accept."""
    seed(conn, raw_sql.seed_rows(prefix, n, pending=True, now=now()))
    watch = Stopwatch.around(conn).start()
    for i in range(n):
        accept(conn, f"{prefix}e{i}", f"{prefix}s{i}", f"{prefix}m{i}", now(), **kwargs)
    elapsed = watch.stop(n)
    raw_sql.check_accepted(conn, prefix, n, full=not kwargs.get("state_only"))
    return elapsed


def time_raw_requests(
    conn: Any,
    seed: Callable[[Any, dict[str, list[tuple[Any, ...]]]], None],
    request: Callable[..., Any],
    prefix: str,
    n: int,
) -> Timing:
    """Seed ``n`` active sessions (untimed), request an extension on each (timed)."""
    seed(conn, raw_sql.seed_rows(prefix, n, pending=False, now=now()))
    watch = Stopwatch.around(conn).start()
    for i in range(n):
        request(conn, f"{prefix}e{i}", f"{prefix}s{i}", f"{prefix}c{i}", f"{prefix}p{i}", now())
    elapsed = watch.stop(n)
    pending = raw_sql.count(
        conn,
        "SELECT count(*) FROM extensions WHERE id LIKE ? AND status = 'pending'",
        (prefix + "%",),
    )
    check(pending == n, f"{prefix}: {pending} of {n} requests pending")
    return elapsed


# ------------------------------------------------------------ our runners


async def time_our_accepts(
    service: ExtensionService,
    conn: Any,
    seed: Callable[[Any, dict[str, list[tuple[Any, ...]]]], None],
    prefix: str,
    n: int,
) -> Timing:
    """The same seed, each extension accepted through ``ExtensionService``.

    The answer window is an hour, not the default 10 s: on a loaded machine
    (contention rows) a run of accepts can outlast 10 s, and a late answer is
    refused (the raw code checks no deadline)."""
    start = now()
    seed(
        conn,
        raw_sql.seed_rows(prefix, n, pending=True, now=start, deadline=start + timedelta(hours=1)),
    )
    watch = Stopwatch.around(conn).start()
    for i in range(n):
        await service.respond_to_extension(
            extension_id=f"{prefix}e{i}",
            session_id=f"{prefix}s{i}",
            mitra_id=f"{prefix}m{i}",
            accepted=True,
        )
    elapsed = watch.stop(n)
    raw_sql.check_accepted(conn, prefix, n)
    return elapsed


async def time_our_pairs(
    service: ExtensionService,
    conn: Any,
    seed: Callable[[Any, dict[str, list[tuple[Any, ...]]]], None],
    prefix: str,
    n: int,
) -> Timing:
    """Request then accept through ``ExtensionService``, per session; seconds per pair."""
    seed(conn, raw_sql.seed_rows(prefix, n, pending=False, now=now()))
    watch = Stopwatch.around(conn).start()
    for i in range(n):
        ext = await service.request_extension(
            session_id=f"{prefix}s{i}",
            customer_id=f"{prefix}c{i}",
            duration_minutes=15,
            price=15_000,
            extension_payment_session_id=f"{prefix}p{i}",
        )
        await service.respond_to_extension(
            extension_id=ext.id, session_id=f"{prefix}s{i}", mitra_id=f"{prefix}m{i}", accepted=True
        )
    elapsed = watch.stop(n)
    accepted = raw_sql.count(
        conn,
        "SELECT count(*) FROM extensions WHERE session_id LIKE ? AND status = 'accepted'",
        (prefix + "%",),
    )
    check(accepted == n, f"{prefix}: {accepted} of {n} request+accept pairs accepted")
    ledger = raw_sql.count(
        conn, "SELECT count(*) FROM customer_transactions WHERE session_id LIKE ?", (prefix + "%",)
    )
    check(ledger == n, f"{prefix}: {ledger} of {n} ledger rows")
    return elapsed


async def _alternate(
    repeats: int, ours: Callable[[int], Awaitable[Timing]], raw: Callable[[int], Timing]
) -> tuple[Timing, Timing]:
    """Medians (each clock) of ``repeats`` runs of each side, alternating."""
    a: list[Timing] = []
    b: list[Timing] = []
    for r in range(repeats):
        if r % 2:
            a.append(await ours(r))
            b.append(raw(r))
        else:
            b.append(raw(r))
            a.append(await ours(r))
    return Timing.median(a), Timing.median(b)


# ------------------------------------------------------------ cases


async def _sqlite_accept(sizes: Sizes, path: Path, tag: str) -> list[Result]:
    store = await open_store(f"sqlite:///{path}")
    conn = raw_sql.sqlite_connect(str(path))
    n = sizes.sql_ops
    seed = raw_sql.seed_sqlite
    try:
        service = make_service(store)
        ours_a, raw_a = await _alternate(
            sizes.repeats,
            lambda r: time_our_accepts(service, conn, seed, f"oa{r}_", n),
            lambda r: time_raw_accepts(conn, seed, raw_sql.sqlite_accept, f"ra{r}_", n),
        )
        ours_p, raw_q = await _alternate(
            sizes.repeats,
            lambda r: time_our_pairs(service, conn, seed, f"op{r}_", n),
            lambda r: time_raw_requests(conn, seed, raw_sql.sqlite_request, f"rq{r}_", n),
        )
    finally:
        conn.close()
        await store.aclose()
    raw_pair = raw_a.plus(raw_q)
    accept = Result(
        case=f"durable accept, SQLite file (WAL){tag}",
        ours=ours_a.wall * 1e6,
        baseline=raw_a.wall * 1e6,
        unit="µs/op",
        baseline_name="raw sqlite3: the accept's writes in one transaction "
        "(same tables, WAL, synchronous=FULL, BEGIN IMMEDIATE)",
        target="≤ 2x",
        limit=2.0,
        verified=True,
        notes=[
            "ours: ExtensionService.respond_to_extension over SqlAlchemyStore.open(sqlite "
            "URL); its outbox rows left undelivered, as the raw code does; CPU time is "
            "informative here"
        ],
    )
    pair = Result(
        case=f"request + accept end to end via ExtensionService, SQLite{tag}",
        ours=ours_p.wall * 1e6,
        baseline=raw_pair.wall * 1e6,
        unit="µs/pair",
        baseline_name="raw sqlite3 request + raw sqlite3 accept",
        target="≤ 2x",
        limit=2.0,
        verified=True,
        extra={"raw_request_us": raw_q.wall * 1e6, "raw_accept_us": raw_a.wall * 1e6},
    )
    return [
        accept,
        cpu_row(accept, ours_a, raw_a, informative=True),
        pair,
        cpu_row(pair, ours_p, raw_pair, informative=True),
    ]


def sqlite_accept(sizes: Sizes, tmp: Path, *, contended: bool = False) -> list[Result]:
    """Durable accept on a SQLite file (WAL) and request + accept end to end;
    ``contended``: the same on a fresh file with a busy process pinned on each core."""
    if not contended:
        return asyncio.run(_sqlite_accept(sizes, tmp / "accept.db", ""))
    with busy_cores(max_seconds=sizes.busy_max_s) as busy:
        results = asyncio.run(_sqlite_accept(sizes, tmp / "accept_contended.db", CONTENDED))
    for r in results:
        r.notes.append(busy.note())
    return results


def pg_connect(url: str) -> psycopg.Connection[Any]:
    """The raw baseline's connection (autocommit; each call opens its own transaction)."""
    return psycopg.connect(url, autocommit=True)


# ------------------------------------------------------------ PostgreSQL

DELIVERY_LIMIT_S = 120.0  # rows a loaded machine leaves leased get this long to go out


async def deliver_all(service: ExtensionService, conn: Any, prefix: str) -> None:
    """Wait for the calls' background deliveries; rows left (leased, or a lane's
    next) go out through the dispatch pass, bounded; then none is undelivered."""
    await service.dispatcher.drain()
    give_up = time.monotonic() + DELIVERY_LIMIT_S
    while _undelivered(conn, prefix) and time.monotonic() < give_up:
        if not (await service.dispatcher.dispatch_due(100)).handled:
            await asyncio.sleep(0.2)
    left = _undelivered(conn, prefix)
    check(left == 0, f"{prefix}: {left} outbox rows undelivered")


def _undelivered(conn: Any, prefix: str) -> int:
    return raw_sql.count(
        conn,
        "SELECT count(*) FROM extension_outbox WHERE dedupe_key LIKE ? AND delivered_at IS NULL",
        (prefix + "%",),
    )


class PgSides:
    """The ways to accept (and request) on one PostgreSQL database: ours (with its
    delivery, and ``undelivered``: a second service on the same store leaving its
    outbox rows in the table), hand-written SQLAlchemy, raw psycopg."""

    def __init__(
        self,
        service: ExtensionService,
        undelivered: ExtensionService,
        engine: AsyncEngine,
        conn: Any,
        sockets: InMemorySockets,
    ) -> None:
        self.service, self.undelivered = service, undelivered
        self.engine, self.conn, self.sockets = engine, conn, sockets

    def _seed(self, prefix: str, n: int, *, pending: bool) -> None:
        start = now()
        rows = raw_sql.seed_rows(
            prefix, n, pending=pending, now=start, deadline=start + timedelta(hours=1)
        )
        raw_sql.seed_pg(self.conn, rows)

    async def ours_accepts(self, prefix: str, n: int) -> Timing:
        """Each accepted through ``ExtensionService``, its outbox delivered (timed).

        The answer window is an hour: on a loaded machine a run can outlast the
        default 10 s, and a late answer is refused (the baselines check no deadline)."""
        self._seed(prefix, n, pending=True)
        sent = self.sockets.sent
        watch = Stopwatch.around(self.conn).start()
        for i in range(n):
            await self.service.respond_to_extension(
                extension_id=f"{prefix}e{i}",
                session_id=f"{prefix}s{i}",
                mitra_id=f"{prefix}m{i}",
                accepted=True,
            )
        await deliver_all(self.service, self.conn, prefix)
        elapsed = watch.stop(n)
        raw_sql.check_accepted(self.conn, prefix, n)
        check(self.sockets.sent - sent >= 3 * n, f"{prefix}: frames not on the sockets")
        return elapsed

    async def undelivered_accepts(self, prefix: str, n: int) -> Timing:
        """The same accepts, their outbox rows left in the table (timed): the
        decision's share of the whole call."""
        self._seed(prefix, n, pending=True)
        watch = Stopwatch.around(self.conn).start()
        for i in range(n):
            await self.undelivered.respond_to_extension(
                extension_id=f"{prefix}e{i}",
                session_id=f"{prefix}s{i}",
                mitra_id=f"{prefix}m{i}",
                accepted=True,
            )
        elapsed = watch.stop(n)
        raw_sql.check_accepted(self.conn, prefix, n)
        left = _undelivered(self.conn, prefix)
        check(left == 6 * n, f"{prefix}: {left} outbox rows left for {n} accepts, not {6 * n}")
        # Retired, untimed: otherwise the next block's dispatch pass (ours, the
        # whole call) would deliver these rows first and time them as its own.
        self.conn.execute(
            "UPDATE extension_outbox SET delivered_at = now() "
            "WHERE dedupe_key LIKE %s AND delivered_at IS NULL",
            (prefix + "%",),
        )
        return elapsed

    async def ours_pairs(self, prefix: str, n: int) -> Timing:
        """Request then accept through ``ExtensionService``, outbox delivered (timed)."""
        self._seed(prefix, n, pending=False)
        watch = Stopwatch.around(self.conn).start()
        for i in range(n):
            ext = await self.service.request_extension(
                session_id=f"{prefix}s{i}",
                customer_id=f"{prefix}c{i}",
                duration_minutes=15,
                price=15_000,
                extension_payment_session_id=f"{prefix}p{i}",
            )
            await self.service.respond_to_extension(
                extension_id=ext.id,
                session_id=f"{prefix}s{i}",
                mitra_id=f"{prefix}m{i}",
                accepted=True,
            )
        await deliver_all(self.service, self.conn, prefix)
        elapsed = watch.stop(n)
        self._check_pairs(prefix, n)
        return elapsed

    async def sa_accepts(self, prefix: str, n: int) -> Timing:
        """The hand-written SQLAlchemy accept on the same engine (timed)."""
        self._seed(prefix, n, pending=True)
        watch = Stopwatch.around(self.conn).start()
        for i in range(n):
            await sa_baseline.accept(self.engine, f"{prefix}e{i}", f"{prefix}s{i}", f"{prefix}m{i}")
        elapsed = watch.stop(n)
        raw_sql.check_accepted(self.conn, prefix, n, full=False)
        return elapsed

    async def sa_pairs(self, prefix: str, n: int) -> Timing:
        """The hand-written SQLAlchemy request, then accept (timed)."""
        self._seed(prefix, n, pending=False)
        watch = Stopwatch.around(self.conn).start()
        for i in range(n):
            ext, sid = f"{prefix}e{i}", f"{prefix}s{i}"
            await sa_baseline.request(self.engine, ext, sid, f"{prefix}c{i}", f"{prefix}p{i}")
            await sa_baseline.accept(self.engine, ext, sid, f"{prefix}m{i}")
        elapsed = watch.stop(n)
        self._check_pairs(prefix, n)
        return elapsed

    async def raw_accepts(self, prefix: str, n: int) -> Timing:
        """Raw psycopg, the 4 state statements in a transaction (timed)."""
        self._seed(prefix, n, pending=True)
        watch = Stopwatch.around(self.conn).start()
        for i in range(n):
            raw_sql.pg_accept(
                self.conn, f"{prefix}e{i}", f"{prefix}s{i}", f"{prefix}m{i}", now(), state_only=True
            )
        elapsed = watch.stop(n)
        raw_sql.check_accepted(self.conn, prefix, n, full=False)
        return elapsed

    async def raw_pairs(self, prefix: str, n: int) -> Timing:
        """Raw psycopg request (its 3 state statements), then the 4-statement accept."""
        self._seed(prefix, n, pending=False)
        watch = Stopwatch.around(self.conn).start()
        for i in range(n):
            ext, sid = f"{prefix}e{i}", f"{prefix}s{i}"
            raw_sql.pg_request(
                self.conn, ext, sid, f"{prefix}c{i}", f"{prefix}p{i}", now(), state_only=True
            )
            raw_sql.pg_accept(self.conn, ext, sid, f"{prefix}m{i}", now(), state_only=True)
        elapsed = watch.stop(n)
        self._check_pairs(prefix, n)
        return elapsed

    def _check_pairs(self, prefix: str, n: int) -> None:
        like = (prefix + "%",)
        accepted = raw_sql.count(
            self.conn,
            "SELECT count(*) FROM extensions WHERE session_id LIKE ? AND status = 'accepted'",
            like,
        )
        check(accepted == n, f"{prefix}: {accepted} of {n} request+accept pairs accepted")
        ledger = raw_sql.count(
            self.conn, "SELECT count(*) FROM customer_transactions WHERE session_id LIKE ?", like
        )
        check(ledger == n, f"{prefix}: {ledger} of {n} ledger rows")


async def _rotate(repeats: int, sides: list[Callable[[int], Awaitable[Timing]]]) -> list[Timing]:
    """Each side's medians over ``repeats`` rounds, the order rotating every round."""
    got: list[list[Timing]] = [[] for _ in sides]
    for r in range(repeats):
        for k in range(len(sides)):
            j = (k + r) % len(sides)
            got[j].append(await sides[j](r))
    return [Timing.median(t) for t in got]


async def _pg_accept(sizes: Sizes, url: str, tag: str) -> list[Result]:
    await (await open_store(url)).aclose()  # the tables
    engine = sa_baseline.engine_for(url)
    store, shared = await open_store_on(engine, url)
    conn = pg_connect(url)
    sockets = InMemorySockets()
    n = sizes.sql_ops
    try:
        service = make_service(store, deliver=True, sockets=sockets)
        undelivered = make_service(store, id_prefix="u")
        sides = PgSides(service, undelivered, engine, conn, sockets)
        await sides.ours_accepts("warm_o", 5)  # connections opened, statements prepared
        await sides.sa_accepts("warm_s", 5)
        ours_a, sa_a, raw_a, bare_a = await _rotate(
            sizes.repeats,
            [
                lambda r: sides.ours_accepts(f"oa{r}_", n),
                lambda r: sides.sa_accepts(f"sa{r}_", n),
                lambda r: sides.raw_accepts(f"ra{r}_", n),
                lambda r: sides.undelivered_accepts(f"ua{r}_", n),
            ],
        )
        ours_p, sa_p, raw_p = await _rotate(
            sizes.repeats,
            [
                lambda r: sides.ours_pairs(f"op{r}_", n),
                lambda r: sides.sa_pairs(f"sp{r}_", n),
                lambda r: sides.raw_pairs(f"rp{r}_", n),
            ],
        )
        await service.aclose()
        await undelivered.aclose()
    finally:
        conn.close()
        await store.aclose()
        await engine.dispose()
    engine_note = (
        "the store runs on the baseline's own AsyncEngine (SqlAlchemyStore.open(engine))"
        if shared
        else "this store takes a URL only: it runs on its own engine for the same URL"
    )
    ours_note = (
        "ours: ExtensionService.respond_to_extension over SqlAlchemyStore, the whole call "
        "with its outbox delivered to in-memory sockets (every frame taken); it also "
        "writes 3 audit rows and 6 outbox rows the baselines do not; " + engine_note
    )
    rows: list[Result] = []
    for what, unit, ours, sa, raw in (
        ("accept", "µs/op", ours_a, sa_a, raw_a),
        ("request + accept end to end", "µs/pair", ours_p, sa_p, raw_p),
    ):
        vs_sa = Result(
            case=f"{what} on PostgreSQL vs hand-written SQLAlchemy{tag}",
            ours=ours.wall * 1e6,
            baseline=sa.wall * 1e6,
            unit=unit,
            baseline_name="SQLAlchemy async by hand on the same engine: SELECT … FOR UPDATE, "
            "then the state statements, one transaction",
            target="≤ 1.0x",
            limit=1.0,
            verified=True,
            notes=[ours_note],
        )
        vs_raw = Result(
            case=f"{what} on PostgreSQL vs raw psycopg{tag}",
            ours=ours.wall * 1e6,
            baseline=raw.wall * 1e6,
            unit=unit,
            baseline_name="raw psycopg: the state statements (4 for an accept, 3 for a "
            "request) in one transaction",
            target="≤ 1.5x",
            limit=1.5,
            verified=True,
        )
        rows += [
            vs_sa,
            cpu_row(vs_sa, ours, sa),
            vs_raw,
            cpu_row(vs_raw, ours, raw, informative=True),
        ]
    bare = Result(
        case=f"accept on PostgreSQL, outbox left undelivered, vs hand-written SQLAlchemy{tag}",
        ours=bare_a.wall * 1e6,
        baseline=sa_a.wall * 1e6,
        unit="µs/op",
        baseline_name="the same SQLAlchemy baseline, same runs",
        target="informative: the decision without its delivery",
        limit=None,
        verified=True,
        notes=[
            "ours without the post-commit delivery (its 6 outbox rows left in the table): "
            "what the call costs before delivery; the gap to the whole call's row is the "
            "delivery's share"
        ],
    )
    rows += [bare, cpu_row(bare, bare_a, sa_a, informative=True)]
    return rows


def pg_accept(sizes: Sizes, *, contended: bool = False) -> list[Result]:
    """Accept and request + accept on PostgreSQL (own database), three ways;
    ``contended``: the same with a busy process pinned on each core."""
    with pg.temporary_database() as url:
        if not contended:
            return asyncio.run(_pg_accept(sizes, url, ""))
        small = replace(sizes, repeats=1) if sizes.quick else sizes  # --quick: the path only
        with busy_cores(max_seconds=sizes.busy_max_s) as busy:
            results = asyncio.run(_pg_accept(small, url, CONTENDED))
        for r in results:
            r.notes.append(busy.note())
        return results
