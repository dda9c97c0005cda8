"""A backlog after an outage: ``backlog_due`` extensions all past their deadline,
drained by 1 and by 4 sweeping processes, against a raw ``SKIP LOCKED`` loop
(:func:`bench.raw_sql.pg_timeout_batch`) in as many processes writing the same
rows.  Every extension must be resolved exactly once: the processes' reports
and the audit log are both checked for a double resolution.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import queue
import time
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from . import pg, raw_sql
from .contention import CONTENDED, busy_cores
from .harness import Result, Sizes, check, median
from .service_kit import make_service, open_store
from .sql_cases import now, pg_connect

WORKERS = 4


def _worker(kind: str, url: str, barrier: Any, out: Any, tag: str) -> None:
    """One process: drain the backlog with the library (``ours``) or the raw loop."""
    if kind == "ours":
        asyncio.run(_ours(url, barrier, out, tag))
    else:
        _raw(url, barrier, out)


async def _ours(url: str, barrier: Any, out: Any, tag: str) -> None:
    from extension_fsm.adapters.sqlalchemy import SqlAlchemyStore

    store = await SqlAlchemyStore.open(url, clock="local")
    try:
        service = make_service(store, id_prefix=f"{tag}_", sweep_spread=True)
        await service.pending_extension("warm-up")  # connect before the clock starts
        barrier.wait()
        started, cpu = time.time(), time.process_time()
        resolved: list[str] = []
        while swept := await service.sweep_due():
            resolved.extend(e.id for e in swept)
        out.put((started, time.time(), resolved, time.process_time() - cpu))
        await service.aclose()
    finally:
        await store.aclose()


def _raw(url: str, barrier: Any, out: Any) -> None:
    conn = pg_connect(url)
    try:
        barrier.wait()
        started, cpu = time.time(), time.process_time()
        resolved: list[str] = []
        while batch := raw_sql.pg_timeout_batch(conn):
            resolved.extend(batch)
        out.put((started, time.time(), resolved, time.process_time() - cpu))
    finally:
        conn.close()


@dataclass
class Drain:
    seconds: float
    cpu_per_resolved: float  # all processes' CPU, seconds


def _drain(kind: str, url: str, workers: int, tag: str, n: int, conn: Any) -> Drain:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(workers)
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(kind, url, barrier, out, f"{tag}k{i}"))
        for i in range(workers)
    ]
    for p in procs:
        p.start()
    got: list[tuple[float, float, list[str], float]] = []
    give_up = time.monotonic() + 1800
    while len(got) < workers:
        try:
            got.append(out.get(timeout=1.0))
        except queue.Empty:
            dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
            if dead or time.monotonic() > give_up:
                for p in procs:
                    p.kill()
                check(False, f"{kind} backlog worker failed (exit codes {dead})")
    for p in procs:
        p.join(timeout=60)
        check(p.exitcode == 0, f"{kind} backlog worker exited with {p.exitcode}")
    _check_once(conn, tag, n, [g[2] for g in got])
    elapsed = max(g[1] for g in got) - min(g[0] for g in got)
    return Drain(elapsed, sum(g[3] for g in got) / n)


def _check_once(conn: Any, prefix: str, n: int, by_worker: list[list[str]]) -> None:
    ids = [i for ws in by_worker for i in ws]
    check(len(set(ids)) == len(ids), f"{prefix}: {len(ids) - len(set(ids))} double resolutions")
    check(len(ids) == n, f"{prefix}: {len(ids)} resolutions reported for {n} due")
    doubles = raw_sql.count(
        conn,
        "SELECT count(*) FROM (SELECT entity_id FROM extension_transitions WHERE entity = "
        "'extension' AND from_status = 'pending' AND entity_id LIKE ? GROUP BY entity_id "
        "HAVING count(*) > 1) AS d",
        (prefix + "%",),
    )
    check(doubles == 0, f"{prefix}: {doubles} extensions resolved twice in the audit log")
    for sql, want in (
        ("SELECT count(*) FROM extensions WHERE id LIKE ? AND status = 'timeout'", n),
        ("SELECT count(*) FROM payment_sessions WHERE id LIKE ? AND status = 'failed'", n),
        ("SELECT count(*) FROM chat_sessions WHERE id LIKE ? AND status = 'closing'", n),
        ("SELECT count(*) FROM extension_outbox WHERE dedupe_key LIKE ?", 5 * n),
    ):
        got = raw_sql.count(conn, sql, (prefix + "%",))
        check(got == want, f"{prefix}: {got} rows, want {want}: {sql}")


def _seed(conn: Any, prefix: str, n: int) -> None:
    t = now() - timedelta(minutes=5)  # the outage: every deadline passed minutes ago
    raw_sql.seed_pg(conn, raw_sql.seed_rows(prefix, n, pending=True, now=t, deadline=t))
    conn.execute("ANALYZE extensions")


def backlog(sizes: Sizes, *, contended: bool = False) -> list[Result]:
    """The four drains (ours and raw, 1 and 4 processes), alternating, medians."""
    n = sizes.backlog_due
    runs: dict[tuple[str, int], list[Drain]] = {}
    configs = [("ours", 1), ("raw", 1), ("ours", WORKERS), ("raw", WORKERS)]
    rounds = 1 if sizes.quick else 3
    with pg.temporary_database() as url, ExitStack() as stack:
        asyncio.run(_create(url))
        conn = pg_connect(url)
        busy = stack.enter_context(busy_cores(max_seconds=sizes.busy_max_s)) if contended else None
        try:
            for r in range(rounds):
                for k in range(len(configs)):
                    kind, workers = configs[(k + r) % len(configs)]
                    prefix = f"b{r}{kind[0]}{workers}_"
                    _seed(conn, prefix, n)
                    runs.setdefault((kind, workers), []).append(
                        _drain(kind, url, workers, prefix, n, conn)
                    )
        finally:
            conn.close()
            stack.close()
    sec = {key: median([d.seconds for d in ds]) for key, ds in runs.items()}
    cpu = {key: median([d.cpu_per_resolved for d in ds]) for key, ds in runs.items()}
    tag = CONTENDED if contended else ""
    rows: list[Result] = []
    for workers in (1, WORKERS):
        wall = Result(
            case=f"backlog: {n:,} due drained by {workers} worker(s) vs a raw SKIP LOCKED "
            f"loop (PostgreSQL){tag}",
            ours=sec[("ours", workers)],
            baseline=sec[("raw", workers)],
            unit="s",
            baseline_name=f"raw psycopg in {workers} process(es): claim 100 due (SKIP LOCKED), "
            "write the same rows (extension, session, payment, 3 audit, 5 outbox), commit",
            target="≤ 1.5x; zero double resolutions",
            limit=1.5,
            verified=True,
            notes=[
                f"ours: {workers} process(es), each ExtensionService.sweep_due() over its own "
                "SqlAlchemyStore until nothing is due (auto_reject, batches of 100); every "
                "extension resolved exactly once (the processes' reports and the audit log)",
                f"{n / sec[('ours', workers)]:,.0f} resolved/s ours, "
                f"{n / sec[('raw', workers)]:,.0f} raw",
            ],
        )
        rows.append(wall)
        rows.append(
            Result(
                case=f"{wall.case}, CPU time",
                ours=cpu[("ours", workers)] * 1e6,
                baseline=cpu[("raw", workers)] * 1e6,
                unit="µs CPU/resolved",
                baseline_name=wall.baseline_name,
                target="informative",
                limit=None,
                verified=True,
                notes=[
                    "CPU of the Python processes (time.process_time in each, summed) per "
                    "extension resolved; PostgreSQL's own CPU is not in it"
                ],
            )
        )
    rows.append(
        Result(
            case=f"backlog: {WORKERS} workers vs one, {n:,} due (PostgreSQL){tag}",
            ours=n / sec[("ours", WORKERS)],
            baseline=n / sec[("ours", 1)],
            unit="resolved/s",
            baseline_name="one worker",
            target="≥ 1.5x under contention; zero double resolutions",
            limit=1.5 if contended else None,
            at_most=False,
            verified=True,
            notes=[f"{os.cpu_count()} cores, shared with PostgreSQL"],
        )
    )
    if busy is not None:
        for row in rows:
            row.notes.append(busy.note())
    return rows


async def _create(url: str) -> None:
    await (await open_store(url)).aclose()
