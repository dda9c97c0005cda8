"""The benchmarks keep running and keep checking their own work (not their speed),
and the machine's compiled fast path stays exactly what ``transitions`` does."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from extension_fsm.machine import EXTENSION_MACHINE, SESSION_MACHINE, Guard, InvalidMove
from extension_fsm.model import TimeoutAction
from tests.ci import IN_CI

ROOT = Path(__file__).resolve().parents[1]
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _guards() -> list[Guard]:
    deadlines = [None, T0 - timedelta(seconds=1), T0, T0 + timedelta(seconds=1)]
    return [
        Guard(now=T0, deadline=d, timeout_action=a, mitra_connected=c, mitra_online=o)
        for d, a, c, o in itertools.product(
            deadlines, list(TimeoutAction), [False, True], [False, True]
        )
    ]


def _outcome(fire: object, *args: object) -> object:
    try:
        return fire(*args)  # type: ignore[operator]
    except InvalidMove as move:
        return ("invalid", move.trigger, move.state, move.guarded)


@pytest.mark.parametrize("machine", [EXTENSION_MACHINE, SESSION_MACHINE], ids=lambda m: m.name)
def test_compiled_fire_matches_transitions_everywhere(machine: object) -> None:
    from extension_fsm.machine import StateMachine

    assert isinstance(machine, StateMachine)
    compared = 0
    for state, trigger, guard in itertools.product(machine.states, machine.triggers, _guards()):
        fast = _outcome(machine.fire, state, trigger, guard)
        slow = _outcome(machine.fire_via_transitions, state, trigger, guard)
        assert fast == slow, (state, trigger, guard)
        assert type(fast) is type(slow)
        compared += 1
    assert compared == len(machine.states) * len(machine.triggers) * len(_guards())


def test_unknown_trigger_is_a_key_error_on_both_paths() -> None:
    with pytest.raises(KeyError):
        EXTENSION_MACHINE.fire(next(iter(EXTENSION_MACHINE.states)), "no_such", Guard(now=T0))
    with pytest.raises(KeyError):
        EXTENSION_MACHINE.fire_via_transitions(
            next(iter(EXTENSION_MACHINE.states)), "no_such", Guard(now=T0)
        )


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
    assert proc.returncode == 0, proc.stderr[-4000:]


def test_quick_benchmarks_run_and_verify_their_work(tmp_path: Path) -> None:
    _bench("--quick", "--out", str(tmp_path), timeout=240)
    data = json.loads((tmp_path / "results.json").read_text())
    results = data["results"]
    assert results, "no case ran"
    for result in results:
        assert result["error"] is None, (result["case"], result["error"])
        assert result["verified"] is True, result["case"]
        assert result["baseline"] is not None and result["baseline"] > 0, result["case"]
    cases = " ".join(r["case"] for r in results)
    for expected in ("core decision", "naive peer", "memory", "SQLite file", "SQLite"):
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
    growth = next(r for r in results if r["case"].startswith("accept latency with"))
    assert len(growth["extra"]["curve"]) >= 2
    assert (tmp_path / "accept_growth.png").stat().st_size > 0
    report = (tmp_path / "RESULTS.md").read_text()
    assert "| case | ours | baseline | ratio | target | met |" in report
    # --report-only: the same table again from results.json, nothing measured.
    (tmp_path / "RESULTS.md").unlink()
    _bench("--report-only", "--out", str(tmp_path), timeout=60)
    assert (tmp_path / "RESULTS.md").read_text() == report
