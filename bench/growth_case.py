"""Accept latency on PostgreSQL as the extensions table grows (10k, 100k, 1M stored)."""

from __future__ import annotations

import asyncio
import time
from contextlib import ExitStack
from typing import Any

import psycopg

from . import pg, raw_sql
from .cpu import Stopwatch, Timing, cpu_row
from .harness import Result, Sizes, check, median
from .service_kit import make_service, open_store
from .sql_cases import now, pg_connect

# ------------------------------------------------------------ growth

_FILL = [
    "INSERT INTO customers (id, display_name) SELECT 'gc' || i, 'Rina' "
    "FROM generate_series(1, %(n)s) AS i",
    "INSERT INTO chat_sessions (id, customer_id, mitra_id, status, expires_at) "
    "SELECT 'gs' || i, 'gc' || i, 'gm' || i, 'ended', now() - interval '1 day' "
    "FROM generate_series(1, %(n)s) AS i",
    "INSERT INTO payment_sessions (id, customer_id, status, amount, is_extension, "
    "is_first_session_discount) SELECT 'gp' || i, 'gc' || i, "
    "CASE i %% 3 WHEN 0 THEN 'consumed' ELSE 'failed' END, 15000, true, false "
    "FROM generate_series(1, %(n)s) AS i",
    "INSERT INTO extensions (id, session_id, duration_minutes, price, payment_session_id, "
    "status, requested_at, expires_at, timeout_seconds, responded_at, via_timeout) "
    "SELECT 'ge' || i, 'gs' || i, 15, 15000, 'gp' || i, "
    "CASE i %% 3 WHEN 0 THEN 'accepted' WHEN 1 THEN 'rejected' ELSE 'timeout' END, "
    "now() - interval '2 days', now() - interval '2 days' + interval '10 seconds', 10, "
    "now() - interval '2 days', i %% 3 = 2 FROM generate_series(1, %(n)s) AS i",
]


def _fill(conn: psycopg.Connection[Any], n: int) -> None:
    with conn.transaction():
        for sql in _FILL:
            conn.execute(sql, {"n": n})  # type: ignore[arg-type]
    conn.execute("VACUUM ANALYZE")


async def _growth(
    sizes: Sizes, urls: list[str], n_ops: int
) -> tuple[list[tuple[int, float, float]], list[Timing]]:
    conns = [pg_connect(u) for u in urls]
    stores = [await open_store(u) for u in urls]
    services = [make_service(s) for s in stores]
    samples: list[list[float]] = [[] for _ in urls]
    medians: list[list[float]] = [[] for _ in urls]
    clocks: list[list[Timing]] = [[] for _ in urls]
    try:
        for conn, size in zip(conns, sizes.growth_sizes, strict=True):
            _fill(conn, size)
        for r in range(sizes.repeats):
            order = range(len(urls)) if r % 2 == 0 else reversed(range(len(urls)))
            for k in order:
                prefix = f"g{r}_"
                conn = conns[k]
                conn.execute("SELECT 1")
                raw_sql.seed_pg(conn, raw_sql.seed_rows(prefix, n_ops, pending=True, now=now()))
                one: list[float] = []
                watch = Stopwatch.around(conn).start()
                for i in range(n_ops):
                    t0 = time.perf_counter()
                    await services[k].respond_to_extension(
                        extension_id=f"{prefix}e{i}",
                        session_id=f"{prefix}s{i}",
                        mitra_id=f"{prefix}m{i}",
                        accepted=True,
                    )
                    one.append(time.perf_counter() - t0)
                clocks[k].append(watch.stop(n_ops))
                raw_sql.check_accepted(conn, prefix, n_ops)
                samples[k].extend(one)
                medians[k].append(median(one))
        for conn, size in zip(conns, sizes.growth_sizes, strict=True):
            stored = raw_sql.count(conn, "SELECT count(*) FROM extensions", ())
            check(stored >= size, f"{stored} extensions stored, expected {size}")
    finally:
        for c in conns:
            c.close()
        for s in stores:
            await s.aclose()
    curve = []
    for size, meds, all_ in zip(sizes.growth_sizes, medians, samples, strict=True):
        all_.sort()
        curve.append((size, median(meds) * 1e6, all_[int(0.99 * (len(all_) - 1))] * 1e6))
    return curve, [Timing.median(c) for c in clocks]


def pg_growth(sizes: Sizes) -> list[Result]:
    """Accept latency with 10k / 100k / 1M extensions stored (one database per size)."""
    n_ops = 20 if sizes.quick else 200
    with ExitStack() as stack:
        urls = [stack.enter_context(pg.temporary_database()) for _ in sizes.growth_sizes]
        curve, clocks = asyncio.run(_growth(sizes, urls, n_ops))
    first, last = curve[0], curve[-1]
    wall = Result(
        case=f"accept latency with {last[0]:,} extensions stored (PostgreSQL)",
        ours=last[1],
        baseline=first[1],
        unit="µs/op",
        baseline_name=f"the same accept with {first[0]:,} stored",
        target="≤ 1.3x",
        limit=1.3,
        verified=True,
        notes=[
            "curve (stored: median µs, p99 µs): "
            + ", ".join(f"{s:,}: {m:,.0f}, {p:,.0f}" for s, m, p in curve),
            "filler: as many resolved extensions, ended sessions and payments as stored "
            "(generate_series), then VACUUM ANALYZE; sizes measured round-robin",
        ],
        extra={"curve": curve, "plot": "accept_growth"},
    )
    return [wall, cpu_row(wall, clocks[-1], clocks[0])]
