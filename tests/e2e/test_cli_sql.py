"""The simulator on SQLAlchemy storage: SQLite (file and in-memory) and PostgreSQL.

Skipped until ``extension_fsm.adapters.sqlalchemy`` is installed; the
PostgreSQL test uses a database of its own, created and dropped here.
"""

from __future__ import annotations

import json
import os
import sqlite3
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


def _rows(path: Path) -> dict[str, int]:
    with sqlite3.connect(path) as db:
        names = [n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        counts = {n: db.execute(f'SELECT count(*) FROM "{n}"').fetchone()[0] for n in names}
    db.close()
    return counts


def test_a_database_holding_rows_is_refused_unless_reused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "sim.db"
    db = f"sqlite:///{path}"
    assert _play(capsys, db, "accept.json")[0] == 0
    before = _rows(path)
    assert before["chat_sessions"] == 1
    for argv in (
        ["simulate", "--db", db, str(TIMELINES / "reject.json")],
        ["simulate", "--random", "2", "--db", db, "--out", str(tmp_path)],
    ):
        assert main(argv) == 2
        out, err = capsys.readouterr()
        assert out == "" and err.count("\n") == 1
        assert f"--db {db} already holds data (" in err and "row(s) in chat_sessions" in err
        assert "add --reuse-db" in err and "bad scenario" not in err
    assert _rows(path) == before  # nothing written
    # told to reuse it: random timelines get ids of their own ...
    argv = ["simulate", "--random", "3", "--db", db, "--out", str(tmp_path), "--reuse-db"]
    assert main(argv) == 0, capsys.readouterr()
    assert _rows(path)["chat_sessions"] == 4
    # ... while a scenario file's own session cannot be seeded twice: the
    # database is named, not the file
    assert main(["simulate", "--db", db, "--reuse-db", str(TIMELINES / "accept.json")]) == 2
    err = capsys.readouterr().err
    assert "the database already holds session 's1', which" in err and "accept.json" in err
    assert "bad scenario" not in err


def test_a_database_with_other_tables_is_refused_before_anything_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "host.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY)")
    db.close()
    status = main(["simulate", "--db", f"sqlite:///{path}", str(TIMELINES / "accept.json")])
    assert status == 2 and "already holds data (table orders)" in capsys.readouterr().err
    assert _rows(path) == {"orders": 0}  # no table of ours created


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
    argv = ["simulate", "--random", "5", "--seed", "9", "--db", postgres_db, "--out", str(tmp_path)]
    assert main(argv) == 2  # the database holds the first run's rows
    assert "already holds data" in capsys.readouterr().err
    status = main([*argv, "--reuse-db"])
    assert status == 0, capsys.readouterr().out


@pytest.mark.parametrize(
    ("db", "says"),
    [
        ("sqlite:////no/such/dir/x.db", "the directory /no/such/dir does not exist"),
        ("postgresql://postgres@127.0.0.1:1/x", "cannot reach PostgreSQL at 127.0.0.1:1"),
    ],
)
def test_a_database_that_cannot_be_used_is_one_line(
    capsys: pytest.CaptureFixture[str], db: str, says: str
) -> None:
    assert main(["simulate", "--db", db, str(TIMELINES / "accept.json")]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == f"extension-fsm: --db {db}: {says}\n"


@pytest.mark.postgres
def test_a_missing_postgresql_database_is_one_line(
    postgres_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = postgres_db + "_absent"
    assert main(["simulate", "--db", missing, str(TIMELINES / "accept.json")]) == 2
    name = missing.rsplit("/", 1)[1]
    assert f"PostgreSQL has no database {name!r} (create it" in capsys.readouterr().err
