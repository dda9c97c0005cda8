"""``extension-fsm worker``: resolves due extensions and delivers the outbox in
two independent loops, several replicas at once, stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from extension_fsm import __version__, worker
from extension_fsm.adapters.sqlalchemy import SqlAlchemyStore
from extension_fsm.migrate import upgrade
from extension_fsm.model import Notify, Participant, SessionExpiryExtended
from extension_fsm.operator_status import collect_status
from extension_fsm.outbox import encode_effects
from extension_fsm.testing.samples import add_outbox
from extension_fsm.worker import WorkerConfig, run_worker
from tests.fakes.redis_env import closed_port, connect, new_prefix, redis_url, wipe
from tests.fakes.waiting import eventually
from tests.integration.sql_support import private_postgres_database
from tests.ops.seed_overdue import seed

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        db = f"sqlite:///{tmp_path / 'worker.db'}"
        upgrade(db)
        yield db
        return
    with private_postgres_database("worker") as pg:
        upgrade(pg)
        yield pg


async def _status(url: str) -> dict[str, Any]:
    store = await SqlAlchemyStore.open(url)
    try:
        return await collect_status(store)
    finally:
        await store.aclose()


async def _overdue(url: str) -> int:
    return int((await _status(url))["extensions"]["overdue"])


async def _timeouts_per_extension(url: str) -> dict[str, int]:
    store = await SqlAlchemyStore.open(url)
    log = store.tables.log
    try:
        rows = await store.database.run_sync(
            lambda c: c.execute(
                select(log.c.entity_id).where(
                    log.c.entity == "extension", log.c.from_status == "pending"
                )
            ).all()
        )
    finally:
        await store.aclose()
    counts: dict[str, int] = {}
    for (entity_id,) in rows:
        counts[entity_id] = counts.get(entity_id, 0) + 1
    return counts


async def test_replicas_resolve_every_overdue_extension_exactly_once(url: str) -> None:
    await seed(url, 30)
    assert await _overdue(url) == 30
    stop = asyncio.Event()
    cfg = WorkerConfig(db=url, batch=7, sweep_interval=0.05, dispatch_interval=0.05)
    replicas = [asyncio.create_task(run_worker(cfg, stop)) for _ in range(3)]
    try:
        await eventually(lambda: _settled(url), within=60)
    finally:
        stop.set()
        codes = await asyncio.gather(*replicas)
    assert codes == [0, 0, 0]
    resolved = await _timeouts_per_extension(url)
    assert len(resolved) == 30 and set(resolved.values()) == {1}
    doc = await _status(url)
    assert doc["extensions"]["pending"] == 0
    assert doc["outbox"]["dead"] > 0  # no push configured: the fallbacks end dead, with why


async def _no_overdue(url: str) -> bool:
    return await _overdue(url) == 0


async def _settled(url: str) -> bool:
    doc = await _status(url)
    quiet = doc["outbox"]["waiting"] == doc["outbox"]["retrying"] == 0
    return quiet and doc["extensions"]["overdue"] == 0


class _HungSockets:
    """A socket bridge whose every send hangs."""

    def __init__(self) -> None:
        self.sends = 0

    async def send(self, session_id: str, recipient: Any, message: Any) -> bool:
        self.sends += 1
        await asyncio.Event().wait()
        return True

    async def is_connected(self, participant: Any, user_id: str) -> bool:
        return False


async def test_a_hung_delivery_never_delays_the_sweep_and_stop_still_exits_0(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'hung.db'}"
    upgrade(url)
    await seed(url, 5)
    store = await SqlAlchemyStore.open(url)
    try:  # a due row the dispatch loop takes first, and hangs on
        now = datetime.now(UTC)
        note = Notify("s", Participant.CUSTOMER, "c", {"type": "x"}, "k-hung")
        rows = encode_effects([note], now - timedelta(seconds=1), lambda: "hung")
        await add_outbox(store, *rows)
    finally:
        await store.aclose()
    hung = _HungSockets()

    async def ports(cfg: WorkerConfig) -> Any:
        made = worker._Ports()
        made.sockets = hung
        return made

    monkeypatch.setattr(worker, "_open_ports", ports)
    stop = asyncio.Event()
    cfg = WorkerConfig(
        db=url, batch=2, sweep_interval=0.05, dispatch_interval=0.05, shutdown_timeout=0.5
    )
    task = asyncio.create_task(run_worker(cfg, stop))
    await eventually(lambda: _sending(hung))
    await eventually(lambda: _no_overdue(url))  # the sweep went on while a send hangs
    stop.set()
    assert await task == 0  # the hung step is cancelled after the shutdown timeout
    doc = await _status(url)
    assert doc["extensions"]["by_status"].get("pending", 0) == 0


async def _sending(sockets: _HungSockets) -> bool:
    return sockets.sends > 0


async def test_session_timer_rows_go_to_the_redis_stream(tmp_path: Path) -> None:
    client = await connect()
    prefix = new_prefix()
    url = f"sqlite:///{tmp_path / 'timer.db'}"
    upgrade(url)
    store = await SqlAlchemyStore.open(url)
    expires = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    try:
        rows = encode_effects(
            [SessionExpiryExtended("s1", expires)], datetime.now(UTC), lambda: "t1"
        )
        await add_outbox(store, *rows)
    finally:
        await store.aclose()
    stop = asyncio.Event()
    cfg = WorkerConfig(db=url, redis_url=redis_url(), redis_prefix=prefix, dispatch_interval=0.05)
    task = asyncio.create_task(run_worker(cfg, stop))
    stream = f"{prefix}session_timer"
    try:
        await eventually(lambda: _has_entries(client, stream))
    finally:
        stop.set()
        assert await task == 0
        entries = await client.xrange(stream)
        await wipe(client, prefix)
        await client.aclose()
    fields = {k.decode(): v.decode() for k, v in entries[0][1].items()}
    assert fields == {
        "action": "expiry_extended",
        "session_id": "s1",
        "at": expires.isoformat(),
        "seq": "1",
    }
    assert (await _status(url))["outbox"] == {
        "waiting": 0,
        "retrying": 0,
        "dead": 0,
        "oldest_waiting_seconds": None,
    }


async def _has_entries(client: Any, stream: str) -> bool:
    return int(await client.xlen(stream)) > 0


async def test_without_a_session_timer_the_rows_end_dead_with_the_reason(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'notimer.db'}"
    upgrade(url)
    store = await SqlAlchemyStore.open(url)
    try:
        rows = encode_effects(
            [SessionExpiryExtended("s1", datetime(2030, 1, 1, tzinfo=UTC))],
            datetime.now(UTC),
            lambda: "t1",
        )
        await add_outbox(store, *rows)
    finally:
        await store.aclose()
    stop = asyncio.Event()
    task = asyncio.create_task(run_worker(WorkerConfig(db=url, dispatch_interval=0.05), stop))
    await eventually(lambda: _dead(url))
    stop.set()
    assert await task == 0
    store = await SqlAlchemyStore.open(url)
    try:
        o = store.tables.outbox
        error = await store.database.run_sync(
            lambda c: c.execute(select(o.c.last_error)).scalar_one()
        )
    finally:
        await store.aclose()
    assert "--session-timer redis" in error


async def _dead(url: str) -> bool:
    return int((await _status(url))["outbox"]["dead"]) == 1


async def test_an_unmigrated_database_is_refused_at_start(tmp_path: Path) -> None:
    cfg = WorkerConfig(db=f"sqlite:///{tmp_path / 'empty.db'}")
    assert await run_worker(cfg, asyncio.Event()) == 1


def test_sigterm_finishes_and_exits_0_with_json_logs(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sig.db'}"
    upgrade(url)
    asyncio.run(seed(url, 4))
    env = {**os.environ, "EXTENSION_FSM_DATABASE_URL": url}
    port = closed_port()
    argv = ["worker", "--interval", "0.1", "--metrics-port", str(port)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "extension_fsm.cli", *argv],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    try:
        assert proc.stderr is not None
        lines: list[dict[str, Any]] = []
        for raw in proc.stderr:
            lines.append(json.loads(raw))
            if lines[-1]["msg"] == "swept":
                break
        exposed = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        probes = {
            path: httpx.get(f"http://127.0.0.1:{port}{path}", timeout=30)
            for path in ("/healthz", "/readyz", "/nope")
        }
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    lines += [json.loads(raw) for raw in rest.splitlines()]
    assert proc.returncode == 0
    assert [d["msg"] for d in lines][-2:] == ["stopping", "worker stopped"]
    assert next(d for d in lines if d["msg"] == "swept")["resolved"] == 4
    assert asyncio.run(_overdue(url)) == 0
    assert re.search(
        r'^extension_fsm_timeout_lag_seconds_count\{[^}]*path="sweep"[^}]*\} 4\.0$', exposed, re.M
    )
    # the package's version, not a number written down once
    assert f'otel_scope_version="{__version__}"' in exposed
    assert {p: (r.status_code, r.text) for p, r in probes.items() if p != "/nope"} == {
        "/healthz": (200, "ok\n"),
        "/readyz": (200, "ok\n"),
    }
    assert probes["/nope"].status_code == 404
