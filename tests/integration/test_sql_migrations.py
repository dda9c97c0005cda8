"""Alembic: ``upgrade head`` builds exactly the schema the models describe, and
``downgrade base`` removes it, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from alembic import command
from extension_fsm.adapters.sqlalchemy import SqlAlchemyStore, build_tables, to_async_url
from extension_fsm.migrate import version_table
from extension_fsm.simulator import make_session
from tests.integration.sql_support import private_postgres_database

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'migrated.db'}"
        return
    with private_postgres_database("alembic") as url:
        yield url


def alembic(url: str, monkeypatch: pytest.MonkeyPatch, *args: str, prefix: str = "") -> None:
    monkeypatch.setenv("EXTENSION_FSM_DATABASE_URL", url)
    cfg = Config(str(ROOT / "alembic.ini"), cmd_opts=_XArgs([f"table_prefix={prefix}"]))
    getattr(command, args[0])(cfg, *args[1:])


class _XArgs:
    def __init__(self, x: list[str]) -> None:
        self.x = x


def inspect_db(url: str, fn: Any) -> Any:
    async def run() -> Any:
        engine = create_async_engine(to_async_url(url), poolclass=NullPool)
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(fn)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def drift(url: str, prefix: str = "") -> list[Any]:
    metadata = build_tables(prefix).metadata

    def compare(conn: Any) -> list[Any]:
        opts = {"compare_type": True, "version_table": version_table(prefix)}
        ctx = MigrationContext.configure(conn, opts=opts)
        return list(compare_metadata(ctx, metadata))

    return list(inspect_db(url, compare))


def tables(url: str) -> set[str]:
    return set(inspect_db(url, lambda c: inspect(c).get_table_names()))


@pytest.mark.parametrize("prefix", ["", "fsm_"])
def test_upgrade_matches_models_and_downgrade_removes_all(
    database_url: str, monkeypatch: pytest.MonkeyPatch, prefix: str
) -> None:
    alembic(database_url, monkeypatch, "upgrade", "head", prefix=prefix)
    assert drift(database_url, prefix) == []
    assert {t.name for t in build_tables(prefix).metadata.sorted_tables} <= tables(database_url)
    alembic(database_url, monkeypatch, "downgrade", "base", prefix=prefix)
    assert tables(database_url) <= {version_table(prefix)}


def test_drift_is_detected(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    alembic(database_url, monkeypatch, "upgrade", "head")
    metadata = build_tables().metadata
    from sqlalchemy import Column, String

    metadata.tables["extensions"].append_column(Column("surprise", String(8)))

    def compare(conn: Any) -> list[Any]:
        ctx = MigrationContext.configure(conn, opts={"version_table": version_table()})
        return list(compare_metadata(ctx, metadata))

    diffs = inspect_db(database_url, compare)
    assert [d[0] for d in diffs] == ["add_column"]


def test_migrated_schema_runs_the_store(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    alembic(database_url, monkeypatch, "upgrade", "head")

    async def use() -> list[str]:
        from datetime import UTC, datetime

        store = await SqlAlchemyStore.open(database_url)
        try:
            await store.seed_session(
                make_session("s1", expires_at=datetime(2026, 1, 1, tzinfo=UTC))
            )
            return [s.id for s in (await store.dump()).sessions]
        finally:
            await store.aclose()

    assert asyncio.run(use()) == ["s1"]


def test_migrations_take_the_asyncpg_url_options(monkeypatch: pytest.MonkeyPatch) -> None:
    """The URL a service runs with (``?application_name=``,
    ``?statement_cache_size=``) also migrates: they reached
    ``asyncpg.connect`` unconverted, a ``TypeError``."""
    with private_postgres_database("alembic") as url:
        with_options = url + "?application_name=efsm-migrate&statement_cache_size=0"
        alembic(with_options, monkeypatch, "upgrade", "head")
        assert drift(url) == []
