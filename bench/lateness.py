"""Lateness under steady load with slow dependencies: how long after its
deadline an extension nobody answers is resolved, while the push provider
answers in 2 s and Redis (presence and the socket bridge) in 200 ms.

One process runs what the FastAPI example runs: ``ExtensionService`` over
``SqlAlchemyStore`` on PostgreSQL with an ``AsyncioScheduler`` (a loop timer per
deadline) and ``run_sweeper`` (the sweep and the dispatcher, every
``SWEEP_S``).  Customers request ``RATE`` extensions a second for
``lateness_seconds``; nobody answers, so ``RATE`` a second fall due.  The
timeout action is ``auto_approve``, so each timeout first asks the slow
presence (the mitra is offline: rejected, nothing charged).  Lateness is each
extension's ``responded_at`` minus its deadline; the target is a p99 of at
most the sweep interval plus 1 s.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

from extension_fsm.adapters.clock import AsyncioScheduler
from extension_fsm.sweeper import run_sweeper

from . import pg, raw_sql
from .contention import CONTENDED, busy_cores
from .fakes import SlowPush, SlowRedis
from .harness import Result, Sizes, check
from .service_kit import make_service, open_store
from .sql_cases import now, pg_connect

RATE = 50  # extensions falling due per second
PUSH_S = 2.0
REDIS_S = 0.2
SWEEP_S = 1.0
ANSWER_WINDOW_S = 2  # each request's deadline: this long after it


async def _run(url: str, seconds: float) -> dict[str, Any]:
    n = int(RATE * seconds)
    conn = pg_connect(url)
    store = await open_store(url)
    raw_sql.seed_pg(conn, raw_sql.seed_rows("L_", n, pending=False, now=now()))
    redis = SlowRedis(REDIS_S)
    push = SlowPush(PUSH_S)
    scheduler = AsyncioScheduler()
    service = make_service(
        store,
        action="auto_approve",
        deliver=True,
        timeout_seconds=ANSWER_WINDOW_S,
        sockets=redis,
        presence=redis,
        push=push,
        scheduler=scheduler,
    )
    loops = asyncio.create_task(run_sweeper(service, SWEEP_S))
    cpu0, started = time.process_time(), time.monotonic()
    try:
        for i in range(n):  # a steady RATE a second, whatever each request takes
            await asyncio.sleep(max(0.0, started + i / RATE - time.monotonic()))
            await service.request_extension(
                session_id=f"L_s{i}",
                customer_id=f"L_c{i}",
                duration_minutes=15,
                price=15_000,
                extension_payment_session_id=f"L_p{i}",
            )
        give_up = time.monotonic() + ANSWER_WINDOW_S + 10 * SWEEP_S + 30
        while raw_sql.count(conn, "SELECT count(*) FROM extensions WHERE status = 'pending'", ()):
            check(time.monotonic() < give_up, "extensions still pending long after their deadline")
            await asyncio.sleep(0.1)
        wall, cpu = time.monotonic() - started, time.process_time() - cpu0
        late = [
            (responded - deadline).total_seconds()
            for responded, deadline in conn.execute(
                "SELECT responded_at, expires_at FROM extensions WHERE status = 'timeout'"
            ).fetchall()
        ]
        failed = raw_sql.count(
            conn, "SELECT count(*) FROM payment_sessions WHERE status = 'failed'", ()
        )
    finally:
        loops.cancel()
        await asyncio.gather(loops, return_exceptions=True)
        await service.aclose(grace=0)
        await scheduler.aclose()
        await store.aclose()
        conn.close()
    check(len(late) == n, f"{len(late)} of {n} extensions timed out")
    check(failed == n, f"{failed} of {n} payments failed (offline mitra: nothing charged)")
    check(redis.asked >= n, f"presence asked {redis.asked} times for {n} timeouts")
    check(min(late) >= 0, f"an extension resolved {-min(late):.3f} s before its deadline")
    late.sort()
    return {
        "n": n,
        "p50": late[len(late) // 2],
        "p99": late[int(0.99 * (len(late) - 1))],
        "max": late[-1],
        "mean": statistics.fmean(late),
        "pushes": push.sent,
        "cpu_share": cpu / wall,
    }


def lateness(sizes: Sizes, *, contended: bool = False) -> Result:
    """One steady run (idle, or with a busy process pinned on each core)."""
    seconds = sizes.lateness_seconds
    with pg.temporary_database() as url:
        if contended:
            with busy_cores(max_seconds=sizes.busy_max_s) as busy:
                stats = asyncio.run(_run(url, seconds))
        else:
            stats = asyncio.run(_run(url, seconds))
    limit = SWEEP_S + 1.0
    row = Result(
        case=f"lateness: p99 of resolution minus deadline, {RATE}/s falling due for "
        f"{seconds:.0f} s, push {PUSH_S:.0f} s, Redis {REDIS_S * 1e3:.0f} ms"
        f"{CONTENDED if contended else ''}",
        ours=stats["p99"],
        baseline=limit,
        unit="s",
        baseline_name=f"the target: the sweep interval ({SWEEP_S:.0f} s) + 1 s",
        target=f"≤ {limit:.0f} s",
        limit=1.0,
        verified=True,
        notes=[
            f"{stats['n']:,} extensions, none answered, auto_approve with the mitra offline "
            f"(every payment failed); lateness p50 {stats['p50'] * 1e3:,.0f} ms, p99 "
            f"{stats['p99'] * 1e3:,.0f} ms, max {stats['max'] * 1e3:,.0f} ms; "
            f"{stats['pushes']:,} pushes of 2 s each delivered meanwhile; the process used "
            f"{stats['cpu_share']:.2f} CPU-seconds per second",
        ],
        extra=stats,
    )
    if contended:
        row.notes.append(busy.note())
    return row
