"""The load run: the FastAPI example over PostgreSQL under uvicorn (its own
process), 1,000 sessions driven by 50 concurrent HTTP clients on loopback.

Each session: the customer requests an extension, then the mitra accepts or
rejects it, or nobody answers and the server's sweep times it out.  Counted:
every 5xx; afterwards every invariant of ``docs/design.md`` is checked on the rows in
the database (``extension_fsm.invariants.check_invariants``).
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

from examples.fastapi_app.auth import mint_token
from extension_fsm.invariants import check_invariants
from extension_fsm.model import Participant

from . import pg, raw_sql
from .harness import Result, check
from .service_kit import open_store
from .sql_cases import pg_connect

ROOT = Path(__file__).resolve().parents[1]
SECRET = "bench-load-" + "x" * 40
TIMEOUT_S = 10  # long enough that every answer beats its deadline under load
SWEEP_S = 1.0  # the example's sweep interval

# The servers keep an idle keep-alive connection 75 s (uvicorn's default is 5 s).
# With 5 s a loaded client that takes longer than that to send its next request
# on a connection races the server's close: the request lands on a closed socket,
# the kernel answers with a reset, and httpx raises ReadError (seen under load).
UVICORN_ARGS = ("--log-level", "warning", "--timeout-keep-alive", "75")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_server(url: str, port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
        "EXTENSION_FSM_DATABASE_URL": url,
        "EXTENSION_FSM_JWT_SECRET": SECRET,
        "EXTENSION_FSM_TIMEOUT_SECONDS": str(TIMEOUT_S),
        "EXTENSION_FSM_TIMEOUT_ACTION": "auto_reject",
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "examples.fastapi_app.app:create_app",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            *UVICORN_ARGS,
        ],
        cwd=ROOT,
        env=env,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        check(proc.poll() is None, f"uvicorn exited with {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/openapi.json", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("uvicorn did not start in 60 s")


async def _drive(base: str, n: int, clients: int) -> tuple[list[float], list[int], float]:
    latencies: list[float] = []
    statuses: list[int] = []
    todo: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        todo.put_nowait(i)

    async def post(http: httpx.AsyncClient, path: str, body: object, token: str) -> httpx.Response:
        t0 = time.perf_counter()
        resp = await http.post(path, json=body, headers={"Authorization": f"Bearer {token}"})
        latencies.append(time.perf_counter() - t0)
        statuses.append(resp.status_code)
        return resp

    async def client(http: httpx.AsyncClient) -> None:
        while not todo.empty():
            i = todo.get_nowait()
            s = f"L_s{i}"
            customer = mint_token(Participant.CUSTOMER, f"L_c{i}", SECRET)
            resp = await post(
                http,
                f"/chat/{s}/extensions",
                {
                    "duration_minutes": 15,
                    "price": 15_000,
                    "extension_payment_session_id": f"L_p{i}",
                },
                customer,
            )
            if resp.status_code != 201 or i % 3 == 2:  # every third: nobody answers
                continue
            mitra = mint_token(Participant.MITRA, f"L_m{i}", SECRET)
            await post(
                http,
                f"/chat/{s}/extensions/{resp.json()['id']}/respond",
                {"accepted": i % 3 == 0},
                mitra,
            )

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as http:
        start = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        elapsed = time.perf_counter() - start
    return latencies, statuses, elapsed


async def _verify(url: str, n: int) -> list[str]:
    conn = pg_connect(url)
    try:
        deadline = time.monotonic() + TIMEOUT_S + 10 * SWEEP_S
        while raw_sql.count(conn, "SELECT count(*) FROM extensions WHERE status = 'pending'", ()):
            check(time.monotonic() < deadline, "extensions still pending long after their deadline")
            await asyncio.sleep(0.2)
        by_status = dict(
            conn.execute("SELECT status, count(*) FROM extensions GROUP BY status").fetchall()
        )
    finally:
        conn.close()
    check(sum(by_status.values()) == n, f"{by_status}: not one extension per session")
    check(by_status.get("accepted", 0) == len(range(0, n, 3)), f"accepted: {by_status}")
    check(by_status.get("timeout", 0) == len(range(2, n, 3)), f"timed out: {by_status}")
    store = await open_store(url)
    try:
        dump = await store.dump()
    finally:
        await store.aclose()
    return check_invariants(dump, now=datetime.now(UTC), sweep_interval=SWEEP_S * 3)


def load_run(n: int = 1_000, clients: int = 50) -> Result:
    """Drive the example app; the result row carries p50 and notes p99 and throughput."""
    with pg.temporary_database() as url:
        asyncio.run(_create(url))
        conn = pg_connect(url)
        try:
            raw_sql.seed_pg(conn, raw_sql.seed_rows("L_", n, pending=False, now=datetime.now(UTC)))
        finally:
            conn.close()
        port = _free_port()
        server = _start_server(url, port)
        try:
            latencies, statuses, elapsed = asyncio.run(
                _drive(f"http://127.0.0.1:{port}", n, clients)
            )
            violations = asyncio.run(_verify(url, n))
        finally:
            server.terminate()
            server.wait(timeout=30)
    errors = sum(1 for s in statuses if s >= 500)
    refused = sum(1 for s in statuses if 400 <= s < 500)
    latencies.sort()
    p50 = latencies[len(latencies) // 2] * 1e3
    p99 = latencies[int(0.99 * (len(latencies) - 1))] * 1e3
    check(not violations, f"invariants violated: {violations[:5]}")
    check(refused == 0, f"{refused} requests refused (4xx)")
    return Result(
        case=f"load: FastAPI example + PostgreSQL, {n:,} sessions, {clients} clients (loopback)",
        ours=p50,
        baseline=None,
        unit="ms p50",
        baseline_name="none (absolute target)",
        target="zero 5xx; invariants hold",
        limit=0.0,
        ratio=float(errors + len(violations)),
        verified=True,
        notes=[
            f"{len(statuses):,} HTTP requests in {elapsed:.1f} s: {len(statuses) / elapsed:,.0f} "
            f"req/s; p50 {p50:.1f} ms, p99 {p99:.1f} ms; 5xx: {errors}; "
            f"invariant violations: {len(violations)} (ratio column: 5xx + violations)",
            "each session: request, then accept (1/3), reject (1/3) or no answer (1/3, "
            f"auto_reject after {TIMEOUT_S} s by the server's timer or sweep)",
        ],
    )


async def _create(url: str) -> None:
    await (await open_store(url)).aclose()
