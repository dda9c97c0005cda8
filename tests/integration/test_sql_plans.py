"""The hot lookups use the partial indexes built for them, on both engines.

A planner proves a partial index usable only from constants in the query:
SQLite scanned the whole extensions table for ``status IN (?, ?)``, and a
PostgreSQL generic plan cannot use one for ``status IN ($2, $3)``.  The
status filters are therefore SQL literals; these tests read the plans of the
joined reads that look the pending and live extensions up (a request's, and
``end_session``'s)."""

from __future__ import annotations

import re
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.dialects import postgresql, sqlite

from extension_fsm.adapters.sqlalchemy import SqlAlchemyStore

# (joined read of the unit of work's snapshots, the index it must use)
LOOKUPS = [
    ("request", "uq_extensions_pending_session"),
    ("request", "uq_extensions_live_payment"),
    ("end", "uq_extensions_pending_session"),
]


async def _select(url: str, name: str) -> Any:
    """The ``SELECT`` of the joined read ``name`` (see ``SnapshotStatements``)."""
    store = await SqlAlchemyStore.open(url, create_schema=True, clock="local")
    try:
        async with store.unit_of_work() as uow:
            return getattr(uow._snapshot_statements, name).select
    finally:
        await store.aclose()


@pytest.mark.parametrize(("name", "index"), LOOKUPS)
async def test_sqlite_lookups_search_their_partial_index(
    tmp_path: Path, name: str, index: str
) -> None:
    path = tmp_path / "plans.db"
    compiled = (await _select(f"sqlite:///{path}", name)).compile(dialect=sqlite.dialect())
    params = ["k" for _ in compiled.positiontup]  # the ids looked up
    with closing(sqlite3.connect(path)) as conn:
        plan = conn.execute(f"EXPLAIN QUERY PLAN {compiled.string}", params).fetchall()
    details = " | ".join(str(row[-1]) for row in plan)
    assert f"USING INDEX {index}" in details, details
    assert "SCAN" not in details, details


@pytest.mark.parametrize(("name", "index"), LOOKUPS)
async def test_postgres_generic_plans_use_their_partial_index(
    pg_url: str, name: str, index: str
) -> None:
    import psycopg

    stmt = await _select(pg_url, name)
    sql = str(stmt.compile(dialect=postgresql.dialect()))  # type: ignore[no-untyped-call]
    keys = list(dict.fromkeys(re.findall(r"%\((\w+)\)s", sql)))  # the ids looked up
    for n, key in enumerate(keys, 1):
        sql = sql.replace(f"%({key})s", f"${n}")
    assert keys and "%(" not in sql, sql
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
        conn.execute(f"PREPARE lookup({', '.join('text' for _ in keys)}) AS {sql}")
        args = ", ".join("'k'" for _ in keys)
        plan = "\n".join(r[0] for r in conn.execute(f"EXPLAIN EXECUTE lookup({args})").fetchall())
    assert index in plan, plan
    assert "Seq Scan" not in plan, plan
