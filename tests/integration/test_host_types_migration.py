"""The seed cutover migration checks the host's column types first: what the
library cannot handle safely (money as float or text, a time as text or date,
amounts with a fraction of a unit) stops it, naming table and column, with
nothing changed; exact numerics and local timestamps pass."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.integration.seed_tables import (
    P,
    alembic,
    build_seed_database,
    columns_of,
    cut_over,
    host_typed_ddl,
    retyped,
    seed_ddl,
    sync_url,
)
from tests.integration.sql_support import private_postgres_database


@pytest.fixture
def pg_url() -> Iterator[str]:
    with private_postgres_database("hostmig") as url:
        yield url


def _refused(url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    alembic(url, monkeypatch, "stamp", "0001")
    with pytest.raises(RuntimeError) as refused:
        alembic(url, monkeypatch, "upgrade", "head")
    # nothing half done: no column added, no table of the library's created
    assert "expires_at" not in columns_of(url, "session_extensions")
    assert "closure_deadline" not in columns_of(url, "chat_sessions")
    engine = sa.create_engine(sync_url(url))
    try:
        assert not sa.inspect(engine).has_table("extension_outbox")
    finally:
        engine.dispose()
    return str(refused.value)


@pytest.mark.parametrize(
    ("table", "column", "old", "new"),
    [
        ("payment_sessions", "amount", "integer", "real"),
        ("payment_sessions", "amount", "integer", "double precision"),
        ("payment_sessions", "amount", "integer", "text"),
        ("customer_transactions", "amount", "integer", "float"),
        ("session_extensions", "requested_price", "integer", "real"),
        ("session_extensions", "requested_duration_minutes", "integer", "numeric(6,2)"),
        ("chat_sessions", "expires_at", "timestamptz", "text"),
        ("session_extensions", "requested_at", "timestamptz", "date"),
    ],
)
def test_host_types_migration_refuses_unsafe_column_types_on_postgres(
    pg_url: str, monkeypatch: pytest.MonkeyPatch, table: str, column: str, old: str, new: str
) -> None:
    build_seed_database(pg_url, retyped(seed_ddl(sqlite=False), table, column, old, new))
    message = _refused(pg_url, monkeypatch)
    assert f"{table}.{column} is " in message
    assert "nothing was changed" in message
    # only the column at fault is named
    assert len(re.findall(r"\w+\.\w+ is ", message)) == 1, message


def test_host_types_migration_refuses_real_money_on_sqlite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'seed.db'}"
    ddl = retyped(seed_ddl(sqlite=True), "payment_sessions", "amount", "INTEGER", "REAL")
    build_seed_database(url, retyped(ddl, "chat_sessions", "expires_at", "TIMESTAMP", "TEXT"))
    message = _refused(url, monkeypatch)
    assert "payment_sessions.amount is REAL" in message
    assert "chat_sessions.expires_at is TEXT" in message


def test_host_types_migration_refuses_fractional_amounts_naming_the_rows(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    build_seed_database(pg_url, host_typed_ddl())
    engine = sa.create_engine(sync_url(pg_url))
    try:
        with engine.begin() as conn:
            conn.execute(
                sa.text("UPDATE payment_sessions SET amount = 15000.50 WHERE id = :p"),
                {"p": P["later"]},
            )
    finally:
        engine.dispose()
    message = _refused(pg_url, monkeypatch)
    assert f"payment_sessions.amount of {P['later']} is 15000.50" in message
    # the whole amounts are not named
    assert len(re.findall(r"\w+\.\w+ of \S+ is ", message)) == 1, message


@pytest.mark.parametrize("money", ["integer", "bigint", "numeric(12,2)", "numeric"])
def test_host_types_migration_takes_exact_money_and_local_timestamps(
    pg_url: str, monkeypatch: pytest.MonkeyPatch, money: str
) -> None:
    ddl = [s.replace("timestamptz", "timestamp") for s in seed_ddl(sqlite=False)]
    for table, column in (
        ("payment_sessions", "amount"),
        ("customer_transactions", "amount"),
        ("session_extensions", "requested_price"),
    ):
        if money != "integer":  # the seed's own
            ddl = retyped(ddl, table, column, "integer", money)
    build_seed_database(pg_url, ddl)
    cut_over(pg_url, monkeypatch)
    assert "expires_at" in columns_of(pg_url, "session_extensions")


def test_host_types_migration_0006_checks_a_database_already_at_0004(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A host that reached 0004 before the check existed, with float money.
    build_seed_database(pg_url)
    alembic(pg_url, monkeypatch, "stamp", "0001")
    alembic(pg_url, monkeypatch, "upgrade", "0004")
    engine = sa.create_engine(sync_url(pg_url))
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("ALTER TABLE payment_sessions ALTER COLUMN amount TYPE real"))
    finally:
        engine.dispose()
    with pytest.raises(RuntimeError, match=r"payment_sessions\.amount is REAL"):
        alembic(pg_url, monkeypatch, "upgrade", "head")
    engine = sa.create_engine(sync_url(pg_url))
    try:
        with engine.connect() as conn:
            triggers = conn.execute(
                sa.text("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal")
            ).all()
    finally:
        engine.dispose()
    assert triggers == []  # nothing was changed
