"""The hot lookups use the partial indexes built for them, on both engines.

A planner proves a partial index usable only from constants in the query:
SQLite scanned the whole extensions table for ``status IN (?, ?)``, and a
PostgreSQL generic plan cannot use one for ``status IN ($2, $3)``.  The
status filters are therefore SQL literals; these tests read the plans."""

from __future__ import annotations

import re
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.dialects import postgresql

from extension_fsm.adapters.sqlalchemy import SqlAlchemyStore

# statement attribute on the unit of work's ``statements`` -> the index it must use
LOOKUPS = {
    "pending_for_session": "uq_extensions_pending_session",
    "live_for_payment": "uq_extensions_live_payment",
}


async def _statements(url: str) -> Any:
    store = await SqlAlchemyStore.open(url, create_schema=True, clock="local")
    try:
        async with store.unit_of_work() as uow:
            return uow.statements
    finally:
        await store.aclose()


@pytest.mark.parametrize(("name", "index"), sorted(LOOKUPS.items()))
async def test_sqlite_lookups_search_their_partial_index(
    tmp_path: Path, name: str, index: str
) -> None:
    path = tmp_path / "plans.db"
    stmt = getattr(await _statements(f"sqlite:///{path}"), name)
    compiled = stmt.compile(dialect=(await _sqlite_dialect()))
    with closing(sqlite3.connect(path)) as conn:
        plan = conn.execute(f"EXPLAIN QUERY PLAN {compiled.string}", ("k",)).fetchall()
    details = " | ".join(str(row[-1]) for row in plan)
    assert f"USING INDEX {index}" in details, details
    assert "SCAN" not in details, details


async def _sqlite_dialect() -> Any:
    from sqlalchemy.dialects import sqlite

    return sqlite.dialect()


@pytest.mark.parametrize(("name", "index"), sorted(LOOKUPS.items()))
async def test_postgres_generic_plans_use_their_partial_index(
    pg_url: str, name: str, index: str
) -> None:
    import psycopg

    stmt = getattr(await _statements(pg_url), name)
    sql = str(stmt.compile(dialect=postgresql.dialect()))  # type: ignore[no-untyped-call]
    sql = re.sub(r"%\(key\)s", "$1", sql)
    assert "%(" not in sql, sql  # the only parameter is the key
    with psycopg.connect(pg_url, autocommit=True) as conn:
        # A table the size a service reaches: 20,000 resolved rows, a few pending.
        conn.execute(
            "INSERT INTO extensions (id, session_id, duration_minutes, price, "
            "payment_session_id, status, requested_at, expires_at, timeout_seconds, "
            "via_timeout) SELECT 'e' || i, 's' || i, 10, 15000, 'p' || i, "
            "CASE WHEN i % 1000 = 0 THEN 'pending' ELSE 'rejected' END, now(), now(), 10, "
            "false FROM generate_series(1, 20000) AS i ON CONFLICT DO NOTHING"
        )
        conn.execute("ANALYZE extensions")
        conn.execute("SET plan_cache_mode = force_generic_plan")
        conn.execute(f"PREPARE lookup(text) AS {sql}")
        plan = "\n".join(r[0] for r in conn.execute("EXPLAIN EXECUTE lookup('k')").fetchall())
    assert index in plan, plan
    assert "Seq Scan" not in plan, plan
