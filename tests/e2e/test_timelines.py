"""Every bundled timeline plays and ends as its ``expect`` section says.

The comparison here is the test's own (not the CLI's ``expect`` matcher), and
each file is played both through the runner and through the console entry.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import subprocess
import sys
import time
import tomllib
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from extension_fsm.cli import main
from extension_fsm.simulator.randomize import namespaced, play_random, random_scenario
from extension_fsm.simulator.scenario import load_scenario, parse_scenario
from extension_fsm.simulator.timeline import run_scenario

ROOT = Path(__file__).resolve().parents[2]
TIMELINES = sorted((ROOT / "examples" / "timelines").glob("*.[jt][so][om]*"))


def _raw(path: Path) -> dict[str, Any]:
    text = path.read_text(encoding="utf-8")
    return json.loads(text) if path.suffix == ".json" else tomllib.loads(text)


def _differences(want: Any, got: Any, where: str = "") -> list[str]:
    if isinstance(want, dict):
        assert isinstance(got, dict), where
        return [d for k, w in want.items() for d in _differences(w, got.get(k), f"{where}.{k}")]
    if isinstance(want, list):
        if not isinstance(got, list) or len(got) != len(want):
            return [f"{where}: want {want!r}, got {got!r}"]
        pairs = enumerate(zip(want, got, strict=True))
        return [d for i, (w, g) in pairs for d in _differences(w, g, f"{where}[{i}]")]
    return [] if want == got and type(want) is type(got) else [f"{where}: {want!r} != {got!r}"]


def test_the_bundle_covers_the_design_rows() -> None:
    names = {p.stem for p in TIMELINES}
    for required in (
        "accept",
        "reject",
        "timeout-auto-approve",
        "safeguard-offline",
        "safeguard-not-connected",
        "timeout-auto-reject",
        "timeout-unknown-action",
        "mitra-push-fallback",
        "customer-push-fallback",
        "config-change-before-deadline",
        "restart-mid-pending",
        "session-end-while-pending",
        "duplicate-answer",
        "wrong-mitra",
        "price-mismatch",
        "duration-out-of-range",
        "first-session-discount",
        "payment-checks",
        "second-request-while-pending",
        "one-payment-two-extensions",
        "expiry-while-extending",
        "grace-end-ends-session",
    ):
        assert required in names


@pytest.mark.parametrize("path", TIMELINES, ids=lambda p: p.name)
async def test_timeline_ends_as_expected(path: Path) -> None:
    expect = _raw(path).get("expect")
    assert expect and {"extensions", "errors", "invariants"} <= set(expect), path
    result = await run_scenario(load_scenario(path))
    assert result.violations == []
    assert _differences(expect, result.document) == []


@pytest.mark.parametrize("path", TIMELINES, ids=lambda p: p.name)
async def test_timeline_on_sqlite_matches_memory(path: Path) -> None:
    sql = pytest.importorskip("extension_fsm.adapters.sqlalchemy")
    scenario = load_scenario(path)
    store = await sql.SqlAlchemyStore.open("sqlite://", create_schema=True)
    try:
        on_sqlite = await run_scenario(scenario, store)
    finally:
        await store.aclose()
    assert on_sqlite.document == (await run_scenario(scenario)).document


@pytest.mark.parametrize("path", TIMELINES, ids=lambda p: p.name)
def test_cli_json_matches_and_exits_0(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["simulate", "--json", "--db", "memory", str(path)])
    out = capsys.readouterr().out
    document = json.loads(out)
    assert status == 0
    assert _differences(_raw(path)["expect"], document) == []


def test_examples_simulate_py_is_the_same_entry(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    scenario = ROOT / "examples" / "timelines" / "accept.json"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "simulate.py"),
            "simulate",
            "--json",
            "--db",
            "memory",
            str(scenario),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["extensions"][0]["status"] == "accepted"


def test_examples_simulate_py_without_arguments_plays_the_showcase() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "COLUMNS": "200"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "simulate.py")],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "mitra-offline-incident.json" in done.stdout
    assert "invariants: all hold" in done.stdout


# ------------------------------------------- random timelines on one database


class _CorruptsOneSession:
    """A SQLite store that seeds the ``bad``-th session it is given with 30 s more
    than it was asked (one wrong row): that timeline's invariants must catch it."""

    def __init__(self, inner: Any, bad: int) -> None:
        self._inner = inner
        self._bad = bad
        self._seen = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def seed_session(self, session: Any) -> None:
        if self._seen == self._bad:
            session = replace(session, expires_at=session.expires_at + timedelta(seconds=30))
        self._seen += 1
        await self._inner.seed_session(session)


async def _sqlite(path: Path) -> Any:
    sql = pytest.importorskip("extension_fsm.adapters.sqlalchemy")
    return await sql.SqlAlchemyStore.open(f"sqlite:///{path}", create_schema=True, clock="local")


async def _play_copies(docs: list[dict[str, Any]], copies: int, path: Path) -> float:
    """Wall seconds to play ``copies`` copies of ``docs`` into one fresh SQLite file."""
    store = await _sqlite(path)
    try:
        started = time.perf_counter()
        for copy in range(copies):
            for i, doc in enumerate(docs):
                scenario = parse_scenario(namespaced(doc, f"c{copy}-{i}-"), f"timeline {i}")
                result = await run_scenario(scenario, store)
                assert result.ok, result.violations
        return time.perf_counter() - started
    finally:
        await store.aclose()


async def test_random_scale_is_linear_on_sqlite(tmp_path: Path) -> None:
    # N timelines, then the same N four times over (4N) into one database: each
    # step reads only its own timeline's rows, so 4N costs about 4x N.  Reading
    # the whole store after every step (as before) made 4N cost over 10x.  The
    # same timelines in both runs, and the best of several runs, keep the ratio
    # about the store, not about which timelines were drawn or a busy machine.
    n = 8
    docs = [random_scenario(random.Random(f"scale:{i}")) for i in range(n)]
    small: list[float] = []
    large: list[float] = []
    for attempt in range(2):
        small.append(await _play_copies(docs, 1, tmp_path / f"small{attempt}.db"))
        large.append(await _play_copies(docs, 4, tmp_path / f"large{attempt}.db"))
    small.append(await _play_copies(docs, 1, tmp_path / "small2.db"))  # the cheap one thrice
    ratio = min(large) / min(small)
    assert ratio < 6, f"{4 * n} timelines took {ratio:.1f}x {n} ({small=}, {large=})"


async def test_random_scale_checks_every_timeline_and_the_whole_store(tmp_path: Path) -> None:
    store = await _sqlite(tmp_path / "run.db")
    try:
        run = await play_random(12, 4, store=store, prefix="x-", out=tmp_path)
        whole = await store.dump()
    finally:
        await store.aclose()
    assert run.ok and run.failed == [] and run.store_violations == []
    assert sorted(s.id for s in whole.sessions) == sorted(f"x-{i}-s1" for i in range(12))
    assert run.stats["steps"] == sum(
        len(random_scenario(random.Random(f"4:{i}"))["steps"]) for i in range(12)
    )


async def test_random_scale_catches_one_corrupt_row(tmp_path: Path) -> None:
    inner = await _sqlite(tmp_path / "run.db")
    try:
        store = _CorruptsOneSession(inner, bad=3)
        run = await play_random(6, 2, store=store, prefix="y-", out=tmp_path)
    finally:
        await inner.aclose()
    assert not run.ok
    assert [path.name for path, _ in run.failed] == ["failed-seed2-3.json"]
    assert "3: session y-3-s1 expires" in run.failed[0][1]


async def test_random_scale_reads_the_whole_store_at_the_end(tmp_path: Path) -> None:
    # A charge written into an earlier timeline's rows while later ones play is
    # no step's business (each reads only its own rows): the final read of the
    # whole store is what catches it.
    store = await _sqlite(tmp_path / "run.db")
    path = tmp_path / "run.db"

    def damage() -> None:
        with sqlite3.connect(path) as db:
            db.execute(
                "INSERT INTO customer_transactions "
                "(customer_id, session_id, extension_id, type, amount, created_at) "
                "VALUES ('c1', 'z-0-s1', 'no-such-extension', 'extension', 1, "
                "'2026-01-01 00:00:00.000000')"
            )
        db.close()

    played = 0

    def after_each() -> None:
        nonlocal played
        played += 1
        if played == 2:
            damage()

    try:
        run = await play_random(4, 7, store=store, prefix="z-", out=tmp_path, played=after_each)
    finally:
        await store.aclose()
    assert run.failed == []  # no timeline saw it ...
    assert run.store_violations == ["3: ledger rows for unknown extension no-such-extension"]
    assert not run.ok  # ... the run as a whole did
