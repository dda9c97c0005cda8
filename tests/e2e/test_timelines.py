"""Every bundled timeline plays and ends as its ``expect`` section says.

The comparison here is the test's own (not the CLI's ``expect`` matcher), and
each file is played both through the runner and through the console entry.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from extension_fsm.cli import main
from extension_fsm.simulator.scenario import load_scenario
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
