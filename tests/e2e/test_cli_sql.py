"""The simulator on SQLAlchemy storage: SQLite (file and in-memory) and PostgreSQL.

Skipped until ``extension_fsm.adapters.sqlalchemy`` is installed; the
PostgreSQL test uses a database of its own, created and dropped here.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from extension_fsm.cli import default_db, main
from tests.ci import IN_CI

pytest.importorskip("extension_fsm.adapters.sqlalchemy", reason="the SQL adapter is not installed")

ROOT = Path(__file__).resolve().parents[2]
TIMELINES = ROOT / "examples" / "timelines"
SHOWN = (
    "mitra-offline-incident.json",
    "restart-mid-pending.json",
    "payment-checks.toml",
    "expiry-while-extending.json",
    "grace-end-ends-session.json",
)
POSTGRES_URL = os.environ.get(
    "EXTENSION_FSM_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


def _play(capsys: pytest.CaptureFixture[str], db: str, name: str) -> tuple[int, dict[str, object]]:
    status = main(["simulate", "--json", "--db", db, str(TIMELINES / name)])
    return status, json.loads(capsys.readouterr().out)


def test_sqlite_is_the_default_when_installed() -> None:
    assert default_db() == "sqlite://"


@pytest.mark.parametrize("name", SHOWN)
def test_timelines_on_a_sqlite_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    status, doc = _play(capsys, f"sqlite:///{tmp_path / 'sim.db'}", name)
    memory_status, memory_doc = _play(capsys, "memory", name)
    assert status == memory_status == 0
    assert doc == memory_doc  # same ids, same times, same outcome on either store


def test_a_file_database_refuses_to_replay_over_its_own_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = f"sqlite:///{tmp_path / 'sim.db'}"
    assert _play(capsys, db, "accept.json")[0] == 0
    assert main(["simulate", "--db", db, str(TIMELINES / "accept.json")]) == 2
    assert "already holds" in capsys.readouterr().err


def test_random_timelines_on_sqlite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for db in ("sqlite://", f"sqlite:///{tmp_path / 'random.db'}"):
        status = main(
            ["simulate", "--random", "8", "--seed", "5", "--db", db, "--out", str(tmp_path)]
        )
        assert status == 0, capsys.readouterr().out
    assert not list(tmp_path.glob("failed-*.json"))


@pytest.fixture
def postgres_db() -> Iterator[str]:
    psycopg = pytest.importorskip("psycopg")
    name = f"efsm_cli_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as err:
        if IN_CI:
            pytest.fail(f"PostgreSQL unavailable in CI: {err}")
        pytest.skip(f"PostgreSQL unavailable: {err}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.postgres
def test_timelines_and_random_on_postgresql(
    postgres_db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, doc = _play(capsys, postgres_db, "mitra-offline-incident.json")
    assert status == 0 and doc["invariants"] == {"ok": True, "violations": []}
    status = main(
        ["simulate", "--random", "5", "--seed", "9", "--db", postgres_db, "--out", str(tmp_path)]
    )
    assert status == 0, capsys.readouterr().out
