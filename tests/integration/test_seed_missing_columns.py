"""The cutover migration refuses, before changing anything, old-service tables
that lack a column the library reads, naming table and column: without it
every call would fail later with a 500 (a missing ``chat_sessions.expires_at``
used to pass the migration)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.integration.seed_tables import alembic, build_seed_database, columns_of, sync_url
from tests.integration.sql_support import private_postgres_database


@pytest.fixture(params=["sqlite", "postgres"])
def seed_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'seed.db'}"
        build_seed_database(url)
        yield url
        return
    with private_postgres_database("seedcols") as url:
        build_seed_database(url)
        yield url


def _drop(url: str, table: str, column: str) -> None:
    engine = sa.create_engine(sync_url(url))
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(f"ALTER TABLE {table} DROP COLUMN {column}"))
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("table", "column"),
    [
        ("chat_sessions", "expires_at"),
        ("payment_sessions", "amount"),
        ("customers", "display_name"),
    ],
)
def test_a_missing_column_is_refused_by_name_and_nothing_changes(
    seed_url: str, monkeypatch: pytest.MonkeyPatch, table: str, column: str
) -> None:
    _drop(seed_url, table, column)
    before = {t: columns_of(seed_url, t) for t in ("session_extensions", "chat_sessions")}
    alembic(seed_url, monkeypatch, "stamp", "0001")
    with pytest.raises(RuntimeError) as refused:
        alembic(seed_url, monkeypatch, "upgrade", "head", extension_timeout_seconds="10")
    assert f"{table}.{column}" in str(refused.value)
    after = {t: columns_of(seed_url, t) for t in ("session_extensions", "chat_sessions")}
    assert after == before  # nothing half done
