"""Timeout sweeps: cost against what is due, not what is pending; many workers."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import queue
import sqlite3
import time
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path
from typing import Any

from extension_fsm.adapters.sqlalchemy import SqlAlchemyStore

from . import pg, raw_sql
from .contention import CONTENDED, busy_cores
from .cpu import Stopwatch, Timing, cpu_row
from .harness import Result, Sizes, check, median
from .service_kit import make_service, open_store
from .sql_cases import now, pg_connect


def _seed(conn: Any, prefix: str, n: int, *, due: bool) -> None:
    t = now()
    deadline = t - timedelta(seconds=1) if due else t + timedelta(days=1)
    rows = raw_sql.seed_rows(prefix, n, pending=True, now=t, deadline=deadline)
    (raw_sql.seed_sqlite if isinstance(conn, sqlite3.Connection) else raw_sql.seed_pg)(conn, rows)


def _check_swept(conn: Any, prefix: str, n: int, resolved: int) -> None:
    check(resolved == n, f"{prefix}: the sweep resolved {resolved} of {n} due")
    left = raw_sql.count(
        conn,
        "SELECT count(*) FROM extensions WHERE id LIKE ? AND status = 'pending'",
        (prefix + "%",),
    )
    check(left == 0, f"{prefix}: {left} due extensions still pending")
    failed = raw_sql.count(
        conn,
        "SELECT count(*) FROM payment_sessions WHERE id LIKE ? AND status = 'failed'",
        (prefix + "%",),
    )
    check(failed == n, f"{prefix}: {failed} of {n} payments failed after auto-reject")


async def _sweep_scaling(
    sizes: Sizes, urls: tuple[str, str], conns: tuple[Any, Any]
) -> tuple[Timing, Timing]:
    """Per repeat: ``due`` fresh due rows in both databases, each swept (alternating)."""
    crowded_url, sparse_url = urls
    crowded = conns[0]
    _seed(crowded, "filler_", sizes.sweep_pending - sizes.sweep_due, due=False)
    stores = [await open_store(crowded_url), await open_store(sparse_url)]
    services = [make_service(s, id_prefix=f"w{i}_") for i, s in enumerate(stores)]
    times: dict[int, list[Timing]] = {0: [], 1: []}
    try:
        for r in range(sizes.repeats):
            order = (0, 1) if r % 2 else (1, 0)
            for side in order:
                conn = conns[side]
                prefix = f"d{r}_"
                _seed(conn, prefix, sizes.sweep_due, due=True)
                watch = Stopwatch.around(conn).start()
                swept = await services[side].sweep_due()
                times[side].append(watch.stop(sizes.sweep_due))
                _check_swept(conn, prefix, sizes.sweep_due, len(swept))
        still = raw_sql.count(
            crowded, "SELECT count(*) FROM extensions WHERE status = 'pending'", ()
        )
        check(still == sizes.sweep_pending - sizes.sweep_due, f"{still} not-due rows pending")
    finally:
        for s in stores:
            await s.aclose()
    return Timing.median(times[0]), Timing.median(times[1])


def _scaling_result(backend: str, sizes: Sizes, ours: Timing, base: Timing) -> list[Result]:
    wall = Result(
        case=f"timeout sweep: {sizes.sweep_due:,} due among {sizes.sweep_pending:,} pending, "
        f"{backend}",
        ours=ours.wall * 1e6,
        baseline=base.wall * 1e6,
        unit="µs/due",
        baseline_name=f"the same sweep with {sizes.sweep_due:,} pending in all",
        target="≤ 1.5x",
        limit=1.5,
        verified=True,
        notes=[
            "ExtensionService.sweep_due (auto_reject), batches of 100; every due row "
            "resolved, every other row still pending"
        ],
    )
    return [wall, cpu_row(wall, ours, base)]


def sqlite_sweep(sizes: Sizes, tmp: Path) -> list[Result]:
    """The sweep's cost on SQLite files, crowded vs sparse."""
    paths = (tmp / "crowded.db", tmp / "sparse.db")

    async def run() -> tuple[Timing, Timing]:
        for p in paths:
            await (await open_store(f"sqlite:///{p}")).aclose()
        conns = (raw_sql.sqlite_connect(str(paths[0])), raw_sql.sqlite_connect(str(paths[1])))
        try:
            return await _sweep_scaling(
                sizes, (f"sqlite:///{paths[0]}", f"sqlite:///{paths[1]}"), conns
            )
        finally:
            for c in conns:
                c.close()

    ours, base = asyncio.run(run())
    return _scaling_result("SQLite", sizes, ours, base)


def pg_sweep(sizes: Sizes) -> list[Result]:
    """The sweep's cost on PostgreSQL, crowded vs sparse (two databases)."""
    with ExitStack() as stack:
        urls = (
            stack.enter_context(pg.temporary_database()),
            stack.enter_context(pg.temporary_database()),
        )

        async def run() -> tuple[Timing, Timing]:
            for u in urls:
                await (await open_store(u)).aclose()
            conns = (pg_connect(urls[0]), pg_connect(urls[1]))
            try:
                conns[0].execute("ANALYZE")  # untimed; after the filler
                return await _sweep_scaling(sizes, urls, conns)
            finally:
                for c in conns:
                    c.close()

        ours, base = asyncio.run(run())
    return _scaling_result("PostgreSQL", sizes, ours, base)


# ------------------------------------------------------------ concurrent workers


def _worker(url: str, barrier: Any, out: Any, tag: str) -> None:
    asyncio.run(_worker_async(url, barrier, out, tag))


async def _worker_async(url: str, barrier: Any, out: Any, tag: str) -> None:
    store = await SqlAlchemyStore.open(url, clock="local")
    try:
        service = make_service(store, id_prefix=f"{tag}_", sweep_spread=True)
        async with store.unit_of_work():  # connect before the clock starts
            pass
        barrier.wait()
        started = time.time()
        cpu = time.process_time()
        resolved: list[str] = []
        while swept := await service.sweep_due():
            resolved.extend(e.id for e in swept)
        out.put((started, time.time(), resolved, time.process_time() - cpu))
    finally:
        await store.aclose()


def _run_workers(url: str, workers: int, tag: str) -> tuple[float, list[list[str]], float]:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(workers)
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(url, barrier, out, f"{tag}k{i}")) for i in range(workers)
    ]
    for p in procs:
        p.start()
    got: list[tuple[float, float, list[str], float]] = []
    while len(got) < workers:
        try:
            got.append(out.get(timeout=1.0))
        except queue.Empty:
            dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
            if dead:
                for p in procs:
                    p.kill()
                check(False, f"sweep worker failed (exit codes {dead})")
    for p in procs:
        p.join(timeout=60)
        check(p.exitcode == 0, f"sweep worker exited with {p.exitcode}")
    elapsed = max(g[1] for g in got) - min(g[0] for g in got)
    return elapsed, [g[2] for g in got], sum(g[3] for g in got)


def _check_once(conn: Any, prefix: str, n: int, by_worker: list[list[str]]) -> None:
    ids = [i for ws in by_worker for i in ws]
    check(len(ids) == n, f"{prefix}: workers reported {len(ids)} resolutions for {n} due")
    check(len(set(ids)) == n, f"{prefix}: {len(ids) - len(set(ids))} double resolutions reported")
    doubles = raw_sql.count(
        conn,
        "SELECT count(*) FROM (SELECT entity_id FROM extension_transitions WHERE entity = "
        "'extension' AND from_status = 'pending' AND entity_id LIKE ? GROUP BY entity_id "
        "HAVING count(*) > 1) AS d",
        (prefix + "%",),
    )
    check(doubles == 0, f"{prefix}: {doubles} extensions resolved twice in the audit log")
    _check_swept(conn, prefix, n, len(set(ids)))


def pg_concurrent_sweep(sizes: Sizes, workers: int = 4, *, contended: bool = False) -> list[Result]:
    """``workers`` sweeping processes against one, ``concurrent_due`` due rows each run;
    ``contended``: the same with a busy process pinned on each core."""
    n = sizes.concurrent_due
    rates: dict[int, list[float]] = {1: [], workers: []}
    cpu_share: dict[int, list[float]] = {1: [], workers: []}
    cpu_per: dict[int, list[float]] = {1: [], workers: []}
    with pg.temporary_database() as url, ExitStack() as stack:
        asyncio.run(_create(url))
        conn = pg_connect(url)
        busy = stack.enter_context(busy_cores(max_seconds=sizes.busy_max_s)) if contended else None
        rounds = 1 if contended and sizes.quick else min(sizes.repeats, 3)
        try:
            for r in range(rounds):
                for count in (1, workers) if r % 2 == 0 else (workers, 1):
                    prefix = f"c{r}w{count}_"
                    _seed(conn, prefix, n, due=True)
                    conn.execute("ANALYZE extensions")
                    elapsed, by_worker, cpu = _run_workers(url, count, prefix)
                    _check_once(conn, prefix, n, by_worker)
                    rates[count].append(n / elapsed)
                    cpu_share[count].append(cpu / elapsed)
                    cpu_per[count].append(cpu / n)
        finally:
            conn.close()
            stack.close()
    one, many = median(rates[1]), median(rates[workers])
    tag = CONTENDED if contended else ""
    wall = Result(
        case=f"sweep with {workers} concurrent workers, {n:,} due (PostgreSQL){tag}",
        ours=many,
        baseline=one,
        unit="resolved/s",
        baseline_name="one worker",
        target="≥ 1.5x; zero double resolutions",
        limit=1.5,
        at_most=False,
        verified=True,
        notes=[
            f"{workers} processes, each its own engine; each sweep claims a whole due batch "
            "(for_due, FOR UPDATE SKIP LOCKED) and resolves it in one unit of work; zero "
            "double resolutions (worker reports and the audit log)",
            f"CPU seconds of the Python workers per wall second: one worker "
            f"{median(cpu_share[1]):.2f}, {workers} workers {median(cpu_share[workers]):.2f} "
            f"(of {os.cpu_count()} cores, shared with PostgreSQL)",
        ],
    )
    cpu_time = Result(
        case=f"sweep with {workers} concurrent workers, {n:,} due (PostgreSQL){tag}, CPU time",
        ours=median(cpu_per[workers]) * 1e6,
        baseline=median(cpu_per[1]) * 1e6,
        unit="µs CPU/resolved",
        baseline_name="one worker",
        target="informative (CPU per resolution of all workers)",
        limit=None,
        verified=True,
        notes=[
            "CPU of the worker processes (time.process_time in each, summed) per extension "
            "resolved; the PostgreSQL backends' CPU is not read here (they exit with "
            "their workers)"
        ],
    )
    if busy is not None:
        for row in (wall, cpu_time):
            row.notes.append(busy.note())
    return [wall, cpu_time]


async def _create(url: str) -> None:
    await (await open_store(url)).aclose()
