"""``extension-fsm db / status / outbox`` in-process, on SQLite and PostgreSQL,
and the command line's clean refusals (missing extras, nonsense flags)."""

from __future__ import annotations

import asyncio
import builtins
import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from extension_fsm import __version__
from extension_fsm.adapters.sqlalchemy import SqlAlchemyStore
from extension_fsm.cli import main
from extension_fsm.migrate import head, version_table
from extension_fsm.operator_status import collect_status
from extension_fsm.ports import OutboxMessage
from extension_fsm.testing.samples import add_outbox
from tests.integration.sql_support import private_postgres_database
from tests.ops.seed_overdue import seed

ROOT = Path(__file__).resolve().parents[2]
TIMELINE = ROOT / "examples" / "timelines" / "accept.json"


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ops.db'}"
        return
    with private_postgres_database("ops") as pg:
        yield pg


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_db_upgrade_current_downgrade_and_stamp(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, "db", "upgrade", "--db", url)[:2] == (0, f"{head()} (head)\n")
    assert run(capsys, "db", "current", "--db", url)[1] == f"{head()} (head)\n"
    assert run(capsys, "db", "upgrade", "--db", url)[0] == 0  # again: nothing to do
    assert run(capsys, "db", "downgrade", "base", "--db", url)[:2] == (0, "base (empty)\n")
    assert run(capsys, "db", "current", "--db", url)[:2] == (0, "base (empty)\n")
    status, out, err = run(capsys, "status", "--db", url)
    assert status == 1 and "not migrated" in err and "db upgrade" in err and out == ""
    assert run(capsys, "db", "stamp", "head", "--db", url)[1] == f"{head()} (head)\n"


def test_a_prefixed_schema_has_its_own_version_table(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, "db", "upgrade", "--db", url, "--table-prefix", "fsm_")[0] == 0
    assert run(capsys, "db", "current", "--db", url)[1] == "base (empty)\n"
    status, out, _ = run(capsys, "status", "--db", url, "--table-prefix", "fsm_", "--json")
    assert status == 0 and json.loads(out)["extensions"]["pending"] == 0


def test_create_schema_stamps_the_head_so_upgrade_is_a_no_op(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    async def create() -> None:
        store = await SqlAlchemyStore.open(url, create_schema=True)
        await store.aclose()

    asyncio.run(create())
    assert run(capsys, "db", "current", "--db", url)[1] == f"{head()} (head)\n"
    status, _, err = run(capsys, "db", "upgrade", "--db", url)
    assert status == 0, err  # at branch point: "table customers already exists"


def test_create_schema_over_existing_tables_does_not_guess_a_revision(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    async def create_twice() -> None:
        store = await SqlAlchemyStore.open(url, create_schema=True)
        try:
            await store.database.run_sync(
                lambda c: c.execute(text(f"DELETE FROM {version_table()}"))
            )
        finally:
            await store.aclose()
        store = await SqlAlchemyStore.open(url, create_schema=True)
        await store.aclose()

    asyncio.run(create_twice())
    assert run(capsys, "db", "current", "--db", url)[1] == "base (empty)\n"


def test_status_counts_overdue_and_the_outbox(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "db", "upgrade", "--db", url)[0] == 0
    asyncio.run(seed(url, 3))
    asyncio.run(_outbox_rows(url))
    status, out, err = run(capsys, "status", "--db", url, "--json")
    assert status == 0, err
    doc = json.loads(out)
    assert doc["extensions"]["pending"] == 3 and doc["extensions"]["overdue"] == 3
    assert doc["extensions"]["by_status"] == {"pending": 3}
    assert 55 <= doc["extensions"]["oldest_overdue_seconds"] < 3600
    assert doc["extensions"]["set_aside"] == 0
    assert {k: doc["outbox"][k] for k in ("waiting", "retrying", "dead")} == {
        "waiting": 1,
        "retrying": 1,
        "dead": 2,
    }
    text_status, text_out, _ = run(capsys, "status", "--db", url)
    assert text_status == 0 and "overdue: 3" in text_out and "dead 2" in text_out

    assert run(capsys, "outbox", "retry-dead", "--db", url)[1] == "requeued 2 dead outbox row(s)\n"
    doc = json.loads(run(capsys, "status", "--db", url, "--json")[1])
    assert (doc["outbox"]["waiting"], doc["outbox"]["dead"]) == (3, 0)


def test_status_counts_set_aside_rows(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "db", "upgrade", "--db", url)[0] == 0
    asyncio.run(seed(url, 2))

    async def set_one_aside() -> None:
        store = await SqlAlchemyStore.open(url, clock="local")
        try:
            async with store.unit_of_work() as uow:
                (first, _) = await uow.snapshots.due_ids(datetime.now(UTC), 10)
                assert await uow.set_aside(first, datetime.now(UTC), "unreadable row") == 1
                await uow.commit()
        finally:
            await store.aclose()

    asyncio.run(set_one_aside())
    doc = json.loads(run(capsys, "status", "--db", url, "--json")[1])
    assert doc["extensions"]["set_aside"] == 1


async def _outbox_rows(url: str) -> None:
    """One fresh row, one retrying, two dead (besides the seeded, delivered ones)."""
    store = await SqlAlchemyStore.open(url)
    now = datetime.now(UTC)
    rows = [OutboxMessage(f"o{i}", "notify", f"k{i}", {"n": i}, now) for i in range(4)]
    try:
        await add_outbox(store, *rows)
        await store.outbox.mark_retry("o1", now + timedelta(minutes=5), "down")
        await store.outbox.mark_dead("o2", now, "gone")
        await store.outbox.mark_dead("o3", now, "gone")
    finally:
        await store.aclose()


def test_collect_status_on_an_empty_database(tmp_path: Path) -> None:
    async def empty() -> dict[str, Any]:
        store = await SqlAlchemyStore.open(f"sqlite:///{tmp_path / 'e.db'}", create_schema=True)
        try:
            return await collect_status(store)
        finally:
            await store.aclose()

    doc = asyncio.run(empty())
    assert doc["extensions"]["overdue"] == 0 and doc["extensions"]["oldest_overdue_seconds"] is None
    assert doc["outbox"] == {"waiting": 0, "retrying": 0, "dead": 0, "oldest_waiting_seconds": None}


# ----------------------------------------------------------- the command line


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out == f"extension-fsm {__version__}\n"


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["simulate", str(TIMELINE), "--seed", "3"], "--seed and --out go with --random"),
        (["simulate", str(TIMELINE), "--out", "x"], "--seed and --out go with --random"),
        (["simulate", "--random", "3", "--json"], "--json prints one scenario"),
        (["status"], "--db URL is required"),
        (["status", "--db", "memory"], "use sqlite:///file.db or postgresql"),
        (["worker", "--db", "sqlite://"], "in-memory SQLite"),
        (["worker", "--db", "sqlite:///w.db", "--session-timer", "redis"], "needs --redis"),
        (["worker", "--db", "sqlite:///w.db", "--fcm-endpoint", "http://x"], "without --fcm"),
        (
            [
                "worker",
                "--db",
                "sqlite:///w.db",
                "--fcm-credentials",
                "/nope.json",
                "--redis",
                "redis://127.0.0.1:1/0",
            ],
            "no such file",
        ),
        (["worker", "--db", "sqlite:///w.db", "--fcm-credentials", "/nope.json"], "needs --redis"),
        (["worker", "--db", "sqlite:///w.db", "--timeout-action", "maybe"], "--timeout-action"),
        (["worker", "--db", "sqlite:///w.db", "--redis", "http://x"], "--redis"),
        (["worker", "--db", "sqlite:///w.db", "--interval", "0"], "--sweep-interval"),
        (["worker", "--db", "sqlite:///w.db", "--metrics-port", "0"], "not a port"),
    ],
)
def test_nonsense_is_refused_in_one_line(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run(capsys, *argv)
    assert status == 2 and says in err and len(err.strip().splitlines()) == 1 and out == ""


def _without(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    real = builtins.__import__

    def fake(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.split(".")[0] in modules:
            raise ModuleNotFoundError(f"No module named {name!r}")
        return real(name, *args, **kwargs)

    for name in list(sys.modules):
        if name.split(".")[0] in modules:
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(builtins, "__import__", fake)


def test_simulate_without_rich_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    _without(monkeypatch, "rich")
    status, _, err = run(capsys, "simulate", "--db", "memory", str(TIMELINE))
    assert status == 2 and "extension-fsm[cli]" in err and "Traceback" not in err
    status, out, err = run(capsys, "simulate", "--random", "2", "--out", str(tmp_path))
    assert status == 0 and err == "" and out.endswith("every invariant held\n")  # plain text
    status, out, _ = run(capsys, "simulate", "--json", "--db", "memory", str(TIMELINE))
    assert status == 0 and json.loads(out)["invariants"]["ok"] is True  # JSON needs no rich


@pytest.mark.parametrize(
    ("argv", "extra"),
    [
        (["db", "current", "--db", "sqlite:///x.db"], "extension-fsm[sql]"),
        (["status", "--db", "sqlite:///x.db"], "extension-fsm[sql]"),
        (["worker", "--db", "sqlite:///x.db"], "extension-fsm[sql]"),
    ],
)
def test_operator_commands_without_sql_name_the_extra(
    argv: list[str], extra: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _without(monkeypatch, "sqlalchemy", "alembic")
    status, _, err = run(capsys, *argv)
    assert status == 2 and extra in err and len(err.strip().splitlines()) == 1


def test_worker_with_redis_but_no_redis_package_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _without(monkeypatch, "redis")
    status, _, err = run(capsys, "worker", "--db", "sqlite:///w.db", "--redis", "redis://x:1/0")
    assert status == 2 and "extension-fsm[redis]" in err


def test_the_console_script_exits_2_on_a_missing_extra_without_a_traceback(tmp_path: Path) -> None:
    # A real process: an import hook hides rich, as on an install without the [cli] extra.
    code = (
        "import sys, importlib.abc\n"
        "class Hide(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name.split('.')[0] == 'rich': raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, Hide())\n"
        "from extension_fsm.cli import main\n"
        f"sys.exit(main(['simulate', '--db', 'memory', {str(TIMELINE)!r}]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "extension-fsm[cli]" in done.stderr


async def test_migrations_run_from_inside_an_event_loop(tmp_path: Path) -> None:
    from extension_fsm import migrate

    url = f"sqlite:///{tmp_path / 'loop.db'}"
    assert migrate.upgrade(url) == [head()]  # a host's async start-up: Alembic runs in a thread
    assert migrate.downgrade(url, "base") == []


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("EXTENSION_FSM_LOG_FORMAT", "xml", "--log-format"),
        ("EXTENSION_FSM_LOG_LEVEL", "LOUD", "--log-level"),
        ("EXTENSION_FSM_SESSION_TIMER", "kafka", "--session-timer"),
    ],
)
def test_bad_environment_defaults_are_refused_too(
    variable: str,
    value: str,
    says: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(variable, value)
    status, _, err = run(capsys, "worker", "--db", "sqlite:///w.db")
    assert status == 2 and says in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("variable", "value"),
    [("EXTENSION_FSM_GRACE_SECONDS", "sixty"), ("EXTENSION_FSM_METRICS_PORT", "9o90")],
)
def test_a_bad_integer_in_the_environment_is_one_line_naming_the_variable(
    variable: str,
    value: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(variable, value)
    status, _, err = run(capsys, "worker", "--db", "sqlite:///w.db")
    assert status == 2
    assert err.strip() == f"extension-fsm worker: {variable}={value!r}: not an integer"


def test_a_negative_grace_from_the_environment_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("EXTENSION_FSM_GRACE_SECONDS", "-5")
    status, _, err = run(capsys, "worker", "--db", "sqlite:///w.db")
    assert status == 2 and "--grace-seconds >= 0" in err and len(err.strip().splitlines()) == 1


def test_an_integer_from_the_environment_still_yields_to_the_flag(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("EXTENSION_FSM_GRACE_SECONDS", "sixty")
    status, _, err = run(capsys, "worker", "--db", "sqlite://", "--grace-seconds", "5")
    assert status == 2 and "in-memory SQLite" in err  # the flag won; the next check speaks


def _tables(url: str) -> list[str]:
    async def names() -> list[str]:
        from sqlalchemy import inspect

        async with await SqlAlchemyStore.open(url) as store:
            return await store.database.run_sync(lambda c: sorted(inspect(c).get_table_names()))

    return asyncio.run(names())


def test_db_downgrade_base_leaves_no_table_behind(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, "db", "upgrade", "--db", url)[0] == 0
    assert version_table() in _tables(url)
    assert run(capsys, "db", "downgrade", "base", "--db", url)[:2] == (0, "base (empty)\n")
    assert _tables(url) == []  # the version table included
    assert run(capsys, "db", "upgrade", "--db", url)[:2] == (0, f"{head()} (head)\n")


@pytest.mark.parametrize(
    "argv",
    [
        ["db", "current"],
        ["db", "downgrade", "base"],
        ["status"],
        ["history", "x"],
        ["outbox", "retry-dead"],
    ],
    ids=lambda argv: "-".join(argv),
)
def test_a_mistyped_sqlite_file_is_one_line_and_not_created(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    typo = tmp_path / "tyop.db"
    status, out, err = run(capsys, *argv, "--db", f"sqlite:///{typo}")
    assert (status, out) == (1, "")
    assert err.endswith(f"no such SQLite file {typo} (extension-fsm db upgrade creates it)\n")
    assert err.count("\n") == 1 and not typo.exists()


@pytest.mark.parametrize("argv", [["db", "upgrade"], ["db", "current"], ["status"]])
def test_a_sqlite_file_in_a_missing_directory_is_one_line(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    where = tmp_path / "missing" / "dir"
    status, out, err = run(capsys, *argv, "--db", f"sqlite:///{where / 'x.db'}")
    assert (status, out) == (1, "")
    assert err.endswith(f": the directory {where} does not exist\n") and err.count("\n") == 1
    assert not where.exists()


@pytest.mark.postgres
@pytest.mark.parametrize("argv", [["db", "upgrade"], ["db", "current"], ["status"]])
def test_a_postgres_database_that_does_not_exist_is_named_in_one_line(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    from sqlalchemy.engine import make_url

    with private_postgres_database("gone") as live:
        parsed = make_url(live)
    gone = parsed.render_as_string(hide_password=False)  # dropped on leaving the block
    name = parsed.database
    status, out, err = run(capsys, *argv, "--db", gone)
    assert (status, out) == (1, "")
    assert f"PostgreSQL has no database '{name}' (create it: createdb {name})" in err
    assert err.count("\n") == 1


def test_an_unreachable_postgres_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from tests.fakes.redis_env import closed_port

    port = closed_port()
    status, _, err = run(capsys, "db", "current", "--db", f"postgresql://u@127.0.0.1:{port}/x")
    assert status == 1 and err.count("\n") == 1
    assert err.endswith(f"cannot reach PostgreSQL at 127.0.0.1:{port}\n")


@pytest.mark.parametrize(
    "argv",
    [
        ["schema", "scenario"],
        ["schema", "messages"],
        ["diagram"],
        ["simulate", str(TIMELINE), "--format", "json", "--db", "memory"],
    ],
    ids=["schema-scenario", "schema-messages", "diagram", "simulate-json"],
)
def test_a_reader_that_stops_early_ends_the_command_quietly(argv: list[str]) -> None:
    # `extension-fsm ... | head`: the reader is gone before the first write
    with subprocess.Popen(
        [sys.executable, "-m", "extension_fsm.cli", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()
        err = proc.stderr.read()
        assert proc.wait(timeout=120) == 1
    assert err == b""
