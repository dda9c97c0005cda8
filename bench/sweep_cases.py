"""Timeout sweeps: their cost follows what is due, not what is pending."""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path
from typing import Any

from . import pg, raw_sql
from .cpu import Stopwatch, Timing, cpu_row
from .harness import Result, Sizes, check
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
