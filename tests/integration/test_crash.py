"""Crash test: a subprocess plays timelines and is SIGKILLed at random moments;
after each kill a fresh service over the same database sweeps and dispatches,
and the rows must be whole: every call the player saw return is still there,
nothing pending past its deadline, no session paused without a pending
request, money and ledger consistent, every committed outbox row delivered.

The trial count is fixed and each kill waits for the player to report a
number of committed calls, so a slow or busy machine runs the same trials,
only slower: nothing here measures a speed.
"""

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
from tests.ci import IN_CI
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


class Reports:
    """What the player reported as committed, over every trial so far."""

    def __init__(self) -> None:
        self.requested: dict[str, str] = {}  # extension -> session
        self.answered: dict[str, str] = {}  # extension -> "accept" | "reject"
        self.ended: set[str] = set()

    def add(self, line: bytes) -> None:
        word, *ids = line.decode().split()
        if word == "requested":
            self.requested[ids[0]] = ids[1]
        elif word in ("accept", "reject"):
            self.answered[ids[0]] = word
        elif word == "end":
            self.ended.add(ids[0])
        else:
            raise AssertionError(f"unexpected player output {line!r}")


def play_and_kill(url: str, seed: int, rng: random.Random, reports: Reports) -> None:
    """Start the player, let it report 1-5 committed calls, then SIGKILL it
    (after a random pause, so kills land anywhere inside the next call)."""
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
        wanted = rng.randint(1, 5)
        seen = 0
        while seen < wanted:
            line = proc.stdout.readline()  # blocks until the player commits a call
            assert line, proc.stderr.read() if proc.stderr else b"player exited"
            reports.add(line)
            seen += 1
        time.sleep(rng.uniform(0.0, 0.05))  # where the kill lands; nothing asserted on it
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else b""
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        for line in proc.stdout.read().splitlines():  # reported before the kill landed
            reports.add(line)
    finally:
        proc.kill()
        proc.wait(timeout=60)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


async def recover_and_check(url: str, reports: Reports) -> None:
    store = await SqlAlchemyStore.open(url, clock="local")
    try:
        clock = LaterClock()
        service = build(store, clock)
        await service.sweep_due()
        await service.dispatcher.drain()  # the sweep's own deliveries, in the background
        while (await service.dispatcher.dispatch_due(limit=500)).delivered:
            pass
        dump = await store.dump()
        now = clock.now()
        extensions = {e.id: e for e in dump.extensions}
        sessions = {s.id: s for s in dump.sessions}
        # Nothing lost: every call the player saw return is in the rows.
        assert set(reports.requested) <= set(extensions)
        for ext_id, answer in reports.answered.items():
            expected = ExtensionStatus.ACCEPTED if answer == "accept" else ExtensionStatus.REJECTED
            assert extensions[ext_id].status is expected, (ext_id, answer)
        assert all(sessions[s].status is SessionStatus.ENDED for s in reports.ended)
        # Nothing stuck: past every deadline, nothing is pending or paused.
        assert [e.id for e in dump.extensions if e.status is ExtensionStatus.PENDING] == []
        assert [s.id for s in dump.sessions if s.status is SessionStatus.EXTENDING] == []
        # Every request committed its two notices with it, and every row went out.
        assert len(dump.outbox) >= 2 * len(dump.extensions)
        assert check_invariants(dump, now=now, require_delivered=True) == []
    finally:
        await store.aclose()


@pytest.mark.timeout(1800)  # a hang guard only: a busy machine runs the same trials, slower
def test_sigkill_at_random_moments_loses_nothing(database_url: str) -> None:
    async def create() -> None:
        store = await SqlAlchemyStore.open(database_url, create_schema=True, clock="local")
        await store.aclose()

    asyncio.run(create())
    rng = random.Random(20260101)
    reports = Reports()
    for kill in range(KILLS):
        play_and_kill(database_url, kill, rng, reports)
        asyncio.run(recover_and_check(database_url, reports))
    assert len(reports.requested) >= KILLS  # each trial committed at least one request
