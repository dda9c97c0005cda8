"""The benchmarks keep running and keep checking their own work (not their speed)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.ci import IN_CI

ROOT = Path(__file__).resolve().parents[1]
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _bench(*args: str, timeout: float) -> None:
    """``python -m bench *args`` from a checkout of this repository; it must succeed."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    proc = subprocess.run(
        [sys.executable, "-m", "bench", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    failed = [line for line in proc.stderr.splitlines() if "ERROR" in line]
    assert proc.returncode == 0, "\n".join([*failed, "…", proc.stderr[-3000:]])


@pytest.mark.timeout(660)
def test_quick_benchmarks_run_and_verify_their_work(tmp_path: Path) -> None:
    _bench("--quick", "--out", str(tmp_path), timeout=600)
    data = json.loads((tmp_path / "results.json").read_text())
    results = data["results"]
    assert results, "no case ran"
    for result in results:
        assert result["error"] is None, (result["case"], result["error"])
        assert result["verified"] is True, result["case"]
        assert result["baseline"] is not None and result["baseline"] > 0, result["case"]
    cases = " ".join(r["case"] for r in results)
    for expected in ("core decision", "transitions trigger", "memory", "SQLite file", "SQLite"):
        assert expected in cases
    if data["meta"]["skipped"]:
        assert not IN_CI, f"PostgreSQL missing under CI: {data['meta']['skipped']}"
        pytest.skip(str(data["meta"]["skipped"]))
    for expected in (
        "durable accept, PostgreSQL",
        "timeout sweep",
        "concurrent workers",
        "outbox dispatch",
        "accept latency with",
    ):
        assert expected in cases, expected
    for expected in (  # the runs under contention and the HTTP case against the raw app
        "durable accept, PostgreSQL, under contention",
        "request + accept end to end via ExtensionService, PostgreSQL, under contention",
        "outbox dispatch to a null sender, 200 rows (PostgreSQL), under contention",
        "sweep with 4 concurrent workers, 200 due (PostgreSQL), under contention",
        "HTTP accept, FastAPI example vs raw FastAPI+asyncpg app",
        "HTTP accept, FastAPI example vs raw FastAPI+asyncpg app, accept p99",
        "HTTP accept, FastAPI example vs raw FastAPI+asyncpg app, server CPU time",
    ):
        assert expected in {r["case"] for r in results}, expected
    # every timed SQLite and PostgreSQL case has its CPU-time row, same target
    by_name = {r["case"]: r for r in results}
    timed = [
        r
        for r in results
        if ("SQLite" in r["case"] or "PostgreSQL" in r["case"]) and "CPU" not in r["case"]
    ]
    assert len(timed) >= 14
    for r in timed:
        cpu = by_name.get(r["case"] + ", CPU time")
        assert cpu is not None, r["case"]
        assert cpu["ours"] > 0 and cpu["baseline"] > 0, r["case"]
        if r["limit"] is not None and "concurrent workers" not in r["case"]:
            assert (cpu["limit"], cpu["at_most"]) == (r["limit"], r["at_most"]), r["case"]
    http = by_name["HTTP accept, FastAPI example vs raw FastAPI+asyncpg app"]
    for app in ("ours", "raw"):  # statements per call were counted on the wire
        wire = http["extra"]["wire"][app]
        assert wire["request"] >= 3 and wire["accept"] >= 3, wire  # BEGIN, >= 1, COMMIT
    # the README table finds a row for each of its lines
    from bench.harness import Result
    from bench.report import readme_table

    fields = set(Result.__dataclass_fields__)
    table = readme_table([Result(**{k: v for k, v in r.items() if k in fields}) for r in results])
    for line in table.splitlines()[2:]:
        assert line.split(" | ")[1] not in ("—", "n/a", "error"), line
    growth = next(r for r in results if r["case"].startswith("accept latency with"))
    assert len(growth["extra"]["curve"]) >= 2
    assert (tmp_path / "accept_growth.png").stat().st_size > 0
    report = (tmp_path / "RESULTS.md").read_text()
    assert "| case | ours | baseline | ratio | target | met |" in report
    # --report-only: the same table again from results.json, nothing measured.
    (tmp_path / "RESULTS.md").unlink()
    _bench("--report-only", "--out", str(tmp_path), timeout=60)
    assert (tmp_path / "RESULTS.md").read_text() == report


# ------------------------------------------------------------ the instruments


def test_a_failed_part_of_the_target_misses_it() -> None:
    from bench.harness import Result

    row = Result("c", 100.0, 50.0, "req/s", "b", "≥ 0.8x; zero 5xx", 0.8, at_most=False)
    assert row.met is True
    row.failed.append("3 5xx from ours")
    assert row.met is False


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="Linux only")
def test_busy_cores_pins_one_process_per_core_and_stops_them() -> None:
    from bench.contention import busy_cores
    from bench.cpu import proc_cpu_seconds

    cores = sorted(os.sched_getaffinity(0))
    with busy_cores(max_seconds=120) as busy:
        assert busy.cores == cores
        for pid, core in zip(busy.pids, busy.cores, strict=True):
            assert os.sched_getaffinity(pid) <= {core} or _state(pid) == "gone"
        deadline = time.monotonic() + 60
        while sum(proc_cpu_seconds(p) or 0.0 for p in busy.pids) < 0.05:
            assert time.monotonic() < deadline, "the busy processes never ran"
            time.sleep(0.1)
    assert busy.cpu_seconds > 0 and busy.wall_seconds > 0
    assert all(_state(pid) == "gone" for pid in busy.pids)  # stopped and reaped
    assert "busy Python processes" in busy.note()


def test_busy_processes_stop_by_themselves_after_their_bound() -> None:
    from bench.contention import busy_cores

    with busy_cores(count=1, max_seconds=0.5) as busy:
        deadline = time.monotonic() + 60
        while _state(busy.pids[0]) not in ("Z", "gone"):  # exited, not yet reaped
            assert time.monotonic() < deadline, "a busy process outlived its bound"
            time.sleep(0.1)


def _pg_or_skip() -> None:
    from bench import pg

    missing = pg.available()
    if missing:
        assert not IN_CI, missing
        pytest.skip(missing)


def test_stopwatch_reads_python_and_postgres_cpu() -> None:
    _pg_or_skip()
    import psycopg

    from bench import pg
    from bench.cpu import Stopwatch

    with pg.temporary_database() as url, psycopg.connect(url, autocommit=True) as conn:
        watch = Stopwatch.around(conn).start()
        conn.execute("SELECT count(*) FROM generate_series(1, 3000000)").fetchone()
        sum(range(2_000_000))  # some Python work too
        timing = watch.stop(2)
        assert timing.wall > 0 and timing.cpu > 0
        if watch.backends is not None and watch.backends.readable:  # server on this machine
            assert timing.server is not None and timing.server > 0


async def test_the_wire_counter_sees_each_statement_and_connection() -> None:
    _pg_or_skip()
    import asyncpg

    from bench import pg
    from bench.pg_calls import counting_proxy

    with pg.temporary_database() as url:
        async with counting_proxy(url) as (proxied, counts):
            conn = await asyncio.wait_for(asyncpg.connect(proxied), timeout=30)
            try:
                assert counts.connections == 1
                before = counts.copy()
                await conn.execute("SELECT 1")  # simple protocol: one Q
                assert (counts.queries, counts.executes) == (before.queries + 1, before.executes)
                for i in range(3):  # extended protocol: one E each
                    assert await conn.fetchval("SELECT $1::int", i) == i
                assert counts.executes == before.executes + 3
                async with conn.transaction():  # BEGIN and COMMIT: two more Q
                    await conn.fetchval("SELECT 2")
                assert counts.statements == before.statements + 1 + 3 + 3
            finally:
                await conn.close()
