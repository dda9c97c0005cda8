"""The HTTP path against a raw app: the FastAPI example (the library over
PostgreSQL) against ``bench/raw_app.py`` (the same two routes by hand on
asyncpg, 4 statements a call), each under uvicorn with the same settings on
loopback, driven by the same concurrent clients: request, then accept.

Runs alternate (ours, raw, raw, ours, …), each on fresh sessions, each app in
a fresh server with an untimed warm-up of one call pair per client.  Measured
per run: throughput, per-request latency, 5xx, the server process's CPU and
the PostgreSQL backends' CPU.  Then, untimed, one more server per app goes
through :func:`bench.pg_calls.counting_proxy` to count the statements and connections per call.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass, field

import httpx

from examples.fastapi_app.auth import mint_token
from extension_fsm.model import Participant

from . import pg, raw_sql
from .cpu import BackendPoller, proc_cpu_seconds
from .harness import Result, Sizes, check
from .http_servers import RAW_POOL, RUN_LIMIT_S, start_server, stop_server
from .load_case import SECRET
from .pg_calls import counting_proxy
from .service_kit import open_store
from .sql_cases import now, pg_connect

CASE = "HTTP accept, FastAPI example vs raw FastAPI+asyncpg app"


@dataclass
class Drive:
    """What one drive of the clients saw."""

    requests: list[float] = field(default_factory=list)  # seconds, POST …/extensions
    accepts: list[float] = field(default_factory=list)  # seconds, POST …/respond
    statuses: list[int] = field(default_factory=list)
    pairs: int = 0
    elapsed: float = 0.0


async def _drive(
    base: str, prefix: str, ids: range, clients: int, limit_s: float = RUN_LIMIT_S
) -> Drive:
    """Each session: the customer requests, then the mitra accepts."""
    tokens = {
        i: (
            mint_token(Participant.CUSTOMER, f"{prefix}c{i}", SECRET),
            mint_token(Participant.MITRA, f"{prefix}m{i}", SECRET),
        )
        for i in ids
    }
    todo = list(ids)
    seen = Drive()
    stop_at = time.monotonic() + limit_s

    async def call(
        http: httpx.AsyncClient, path: str, body: object, token: str, into: list[float]
    ) -> httpx.Response:
        t0 = time.perf_counter()
        resp = await http.post(path, json=body, headers={"Authorization": f"Bearer {token}"})
        into.append(time.perf_counter() - t0)
        seen.statuses.append(resp.status_code)
        return resp

    async def client(http: httpx.AsyncClient) -> None:
        while todo and time.monotonic() < stop_at:
            i = todo.pop()
            customer, mitra = tokens[i]
            body = {"duration_minutes": 15, "price": 15_000}
            body["extension_payment_session_id"] = f"{prefix}p{i}"  # type: ignore[assignment]
            resp = await call(http, f"/chat/{prefix}s{i}/extensions", body, customer, seen.requests)
            if resp.status_code != 201:
                continue
            path = f"/chat/{prefix}s{i}/extensions/{resp.json()['id']}/respond"
            resp = await call(http, path, {"accepted": True}, mitra, seen.accepts)
            seen.pairs += resp.status_code == 200

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as http:
        start = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        seen.elapsed = time.perf_counter() - start
    return seen


@dataclass
class Run:
    app: str
    drive: Drive
    server_cpu: float  # seconds, uvicorn process, over the drive
    pg_cpu: float | None
    sessions: int  # PostgreSQL sessions opened from server start to stop


def _sessions(url: str) -> int:
    """Sessions ever opened on the database (``pg_stat_database.sessions``, PG 14+)."""
    conn = pg_connect(url)
    try:
        row = conn.execute(
            "SELECT sessions FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
    finally:
        conn.close()
    return int(row[0]) if row and row[0] is not None else 0


def _seed(url: str, prefix: str, n: int) -> None:
    conn = pg_connect(url)
    try:
        raw_sql.seed_pg(conn, raw_sql.seed_rows(prefix, n, pending=False, now=now()))
    finally:
        conn.close()


def _verify(url: str, prefix: str, pairs: int) -> None:
    conn = pg_connect(url)
    try:
        like = (prefix + "%",)
        accepted = raw_sql.count(
            conn,
            "SELECT count(*) FROM extensions WHERE session_id LIKE ? AND status = 'accepted'",
            like,
        )
        ledger = raw_sql.count(
            conn, "SELECT count(*) FROM customer_transactions WHERE session_id LIKE ?", like
        )
        consumed = raw_sql.count(
            conn,
            "SELECT count(*) FROM payment_sessions WHERE id LIKE ? AND status = 'consumed'",
            like,
        )
    finally:
        conn.close()
    check(accepted == pairs, f"{prefix}: {accepted} accepted in the database, {pairs} answered")
    check(ledger == pairs, f"{prefix}: {ledger} ledger rows for {pairs} accepts")
    check(consumed == pairs, f"{prefix}: {consumed} payments consumed for {pairs} accepts")


async def _one_run(app: str, url: str, prefix: str, sizes: Sizes) -> Run:
    n, clients = sizes.http_sessions, sizes.http_clients
    opened = _sessions(url)
    proc, base = await start_server(app, url)
    try:
        warm = await _drive(base, prefix, range(n, n + clients), clients)
        check(warm.pairs == clients, f"{app}: warm-up answered {warm.pairs} of {clients}")
        cpu0 = proc_cpu_seconds(proc.pid)
        poller = BackendPoller(url)
        try:
            seen = await _drive(base, prefix, range(n), clients)
            cpu1 = proc_cpu_seconds(proc.pid)
        finally:
            # also when the drive fails: the poller's thread and connection must not
            # outlive the run (the temporary database is dropped WITH (FORCE) next)
            pg_cpu = poller.stop()
    finally:
        await stop_server(proc)
    await asyncio.sleep(1.0)  # the backends' last statistics reach the collector
    opened = _sessions(url) - opened - 2  # minus this function's own two connections
    check(cpu0 is not None and cpu1 is not None, "the server's /proc/<pid>/stat is unreadable")
    assert cpu0 is not None and cpu1 is not None
    refused = sum(1 for s in seen.statuses if 400 <= s < 500)
    check(refused == 0, f"{app}: {refused} requests refused (4xx)")
    check(seen.pairs > 0, f"{app}: no request + accept pair completed")
    return Run(app, seen, cpu1 - cpu0, pg_cpu, opened)


async def _count_statements(
    app: str, url: str, prefix: str, k: int, settle: float
) -> dict[str, float]:
    """Statements and connections per call through the counting proxy, one call at a
    time: ``k`` requests, then ``k`` accepts (sessions ``0..k``; ``k`` warms up)."""
    async with counting_proxy(url) as (proxied, counts):
        proc, base = await start_server(app, proxied)
        try:
            warm = await _drive(base, prefix, range(k, k + 1), 1)  # pool open, statements ready
            check(warm.pairs == 1, f"{app}: counting warm-up failed")
            await asyncio.sleep(settle)
            idle0, t0 = counts.copy(), time.perf_counter()
            await asyncio.sleep(2 * settle)
            idle_rate = (counts.statements - idle0.statements) / (time.perf_counter() - t0)
            per: dict[str, float] = {"idle_per_s": idle_rate}
            ext_ids: list[str] = []
            async with httpx.AsyncClient(base_url=base, timeout=30) as http:
                for phase in ("request", "accept"):
                    before, t0 = counts.copy(), time.perf_counter()
                    for i in range(k):
                        if phase == "request":
                            token = mint_token(Participant.CUSTOMER, f"{prefix}c{i}", SECRET)
                            body: dict[str, object] = {
                                "duration_minutes": 15,
                                "price": 15_000,
                                "extension_payment_session_id": f"{prefix}p{i}",
                            }
                            path = f"/chat/{prefix}s{i}/extensions"
                        else:
                            token = mint_token(Participant.MITRA, f"{prefix}m{i}", SECRET)
                            body = {"accepted": True}
                            path = f"/chat/{prefix}s{i}/extensions/{ext_ids[i]}/respond"
                        resp = await http.post(
                            path, json=body, headers={"Authorization": f"Bearer {token}"}
                        )
                        check(resp.status_code in (200, 201), f"{app} {phase}: {resp.text}")
                        if phase == "request":
                            ext_ids.append(resp.json()["id"])
                    await asyncio.sleep(settle)  # work that follows a response (delivery)
                    spent = time.perf_counter() - t0
                    made = counts.statements - before.statements
                    per[phase] = (made - idle_rate * spent) / k
                    per[f"{phase}_connections"] = (counts.connections - before.connections) / k
        finally:
            await stop_server(proc)
    return per


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[int(q * (len(values) - 1))] * 1e3


def _runs(url: str, sizes: Sizes) -> list[Run]:
    runs: list[Run] = []
    for r in range(sizes.http_runs):
        for app in ("ours", "raw") if r % 2 == 0 else ("raw", "ours"):
            prefix = f"H{r}{app[0]}_"
            _seed(url, prefix, sizes.http_sessions + sizes.http_clients)
            run = asyncio.run(_one_run(app, url, prefix, sizes))
            _verify(url, prefix, run.drive.pairs + sizes.http_clients)
            runs.append(run)
    return runs


def http_vs_raw(sizes: Sizes) -> list[Result]:
    """The example against the raw app: throughput, p99, 5xx, CPU, statements per call."""
    k = 3 if sizes.quick else 20
    with pg.temporary_database() as url:
        asyncio.run(_create(url))
        runs = _runs(url, sizes)
        wire: dict[str, dict[str, float]] = {}
        for app in ("ours", "raw"):
            prefix = f"W{app[0]}_"
            _seed(url, prefix, k + 1)
            settle = 0.3 if sizes.quick else 1.0
            wire[app] = asyncio.run(_count_statements(app, url, prefix, k, settle))
    return _results(runs, wire, sizes)


async def _create(url: str) -> None:
    await (await open_store(url)).aclose()


def _results(runs: list[Run], wire: dict[str, dict[str, float]], sizes: Sizes) -> list[Result]:
    by = {app: [r for r in runs if r.app == app] for app in ("ours", "raw")}
    rate = {
        a: statistics.median(len(r.drive.statuses) / r.drive.elapsed for r in rs)
        for a, rs in by.items()
    }
    acc = {a: [x for r in rs for x in r.drive.accepts] for a, rs in by.items()}
    req = {a: [x for r in rs for x in r.drive.requests] for a, rs in by.items()}
    calls = {a: sum(len(r.drive.statuses) for r in rs) for a, rs in by.items()}
    errors = {a: sum(1 for r in rs for s in r.drive.statuses if s >= 500) for a, rs in by.items()}
    cpu_k = {a: sum(r.server_cpu for r in rs) / calls[a] * 1e3 for a, rs in by.items()}
    pg_k = {
        a: None
        if any(r.pg_cpu is None for r in rs)
        else sum(r.pg_cpu or 0 for r in rs) / calls[a] * 1e3
        for a, rs in by.items()
    }
    setup = (
        f"{sizes.http_clients} concurrent httpx clients on loopback, each session a request "
        f"then an accept; {sizes.http_runs} runs per app of {sizes.http_sessions:,} sessions, "
        "alternating, each in a fresh uvicorn (same settings: one process, --log-level "
        f"warning) after an untimed warm-up; raw app: asyncpg pool fixed at {RAW_POOL}"
    )
    lat = "; ".join(
        f"{a}: request p50/p99 {_pct(req[a], 0.5):,.0f}/{_pct(req[a], 0.99):,.0f} ms, "
        f"accept p50/p99 {_pct(acc[a], 0.5):,.0f}/{_pct(acc[a], 0.99):,.0f} ms, "
        f"{rate[a]:,.0f} req/s, 5xx {errors[a]} of {calls[a]:,}"
        for a in ("ours", "raw")
    )
    stmts = "; ".join(
        f"{a}: {w['request']:.1f} per request, {w['accept']:.1f} per accept, new connections "
        f"{w['request_connections']:.2f}/{w['accept_connections']:.2f} per call, "
        f"{w['idle_per_s']:.1f}/s while idle (subtracted)"
        for a, w in wire.items()
    )
    opened = "; ".join(
        f"{a}: {statistics.median(r.sessions for r in rs):,.0f}" for a, rs in by.items()
    )
    stmts += (
        f". PostgreSQL sessions opened per run, server start to stop ({len(runs) // 2} run(s) "
        f"per app, median; pg_stat_database.sessions): {opened}"
    )
    failed = [f"{errors['ours']} 5xx from ours"] if errors["ours"] else []
    failed += [f"{errors['raw']} 5xx from the raw app"] if errors["raw"] else []
    notes = [
        setup,
        lat,
        "statements sent to PostgreSQL (wire count: Q + E messages, BEGIN and "
        "COMMIT included), one call at a time: " + stmts,
    ]
    throughput = Result(
        case=CASE,
        ours=rate["ours"],
        baseline=rate["raw"],
        unit="req/s",
        baseline_name="raw FastAPI + asyncpg app: the same routes, JWT and bodies, "
        "4 statements a call, fixed pool",
        target="≥ 0.8x; zero 5xx",
        limit=0.8,
        at_most=False,
        verified=True,
        notes=notes,
        failed=failed,
        extra={"wire": wire},
    )
    p99 = Result(
        case=f"{CASE}, accept p99",
        ours=_pct(acc["ours"], 0.99),
        baseline=_pct(acc["raw"], 0.99),
        unit="ms",
        baseline_name="the raw app's accept p99",
        target="≤ 1.5x",
        limit=1.5,
        verified=True,
    )
    pg_note = (
        "PostgreSQL backends' CPU per 1,000 requests: "
        + ", ".join(f"{a} {pg_k[a]:.2f} s" for a in ("ours", "raw"))
        if pg_k["ours"] is not None and pg_k["raw"] is not None
        else "PostgreSQL backends' CPU: not readable here"
    )
    cpu = Result(
        case=f"{CASE}, server CPU time",
        ours=cpu_k["ours"],
        baseline=cpu_k["raw"],
        unit="s CPU/1,000 req",
        baseline_name="the raw app's uvicorn process",
        target="informative",
        limit=None,
        verified=True,
        notes=["CPU of the uvicorn process (/proc/<pid>/stat) over the timed drives", pg_note],
    )
    return [throughput, p99, cpu]
