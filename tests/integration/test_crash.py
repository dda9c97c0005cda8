"""Crash test: a subprocess plays timelines and is SIGKILLed at random moments;
after each kill a fresh service over the same database sweeps and dispatches,
and the rows must be whole: nothing pending past its deadline, no session
paused without a pending request, money and ledger consistent, every
committed outbox row delivered."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from extension_fsm.adapters.clock import SystemClock
from extension_fsm.adapters.sqlalchemy import SqlAlchemyStore
from extension_fsm.invariants import check_invariants
from extension_fsm.model import ExtensionStatus, SessionStatus
from tests.conftest import IN_CI
from tests.integration.crash_player import build
from tests.integration.sql_support import private_postgres_database

pytestmark = pytest.mark.slow

KILLS = 50 if IN_CI else 12
ROOT = Path(__file__).resolve().parents[2]
PLAYER = Path(__file__).with_name("crash_player.py")


class LaterClock(SystemClock):
    """The recovering worker's clock: past every deadline and outbox lease."""

    def now(self) -> datetime:
        return super().now() + timedelta(minutes=2)


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'crash.db'}"
        return
    with private_postgres_database("crash") as url:
        yield url


def play_and_kill(url: str, seed: int, rng: random.Random) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    proc = subprocess.Popen(
        [sys.executable, str(PLAYER), url, str(seed)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == b"ready", (line, proc.stderr.read() if proc.stderr else b"")
        time.sleep(rng.uniform(0.0, 0.4))
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else b""
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=10)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


async def recover_and_check(url: str) -> tuple[int, int]:
    store = await SqlAlchemyStore.open(url)
    try:
        clock = LaterClock()
        service = build(store, clock)
        await service.sweep_due()
        await service.dispatcher.drain()  # the sweep's own deliveries, in the background
        while (await service.dispatcher.dispatch_due(limit=500)).delivered:
            pass
        dump = await store.dump()
        now = clock.now()
        pending = {e.session_id for e in dump.extensions if e.status is ExtensionStatus.PENDING}
        assert [e.id for e in dump.extensions if e.id in pending and e.expires_at <= now] == []
        assert all(s.id in pending for s in dump.sessions if s.status is SessionStatus.EXTENDING), (
            "a session is extending without a pending extension"
        )
        assert check_invariants(dump, now=now, require_delivered=True) == []
        return len(dump.extensions), len(dump.outbox)
    finally:
        await store.aclose()


def test_sigkill_at_random_moments_loses_nothing(database_url: str) -> None:
    async def create() -> None:
        store = await SqlAlchemyStore.open(database_url, create_schema=True)
        await store.aclose()

    asyncio.run(create())
    rng = random.Random(20260101)
    seen = (0, 0)
    for kill in range(KILLS):
        play_and_kill(database_url, kill, rng)
        seen = asyncio.run(recover_and_check(database_url))
    extensions, outbox = seen
    assert extensions > KILLS  # the player got real work done between kills
    assert outbox > extensions
