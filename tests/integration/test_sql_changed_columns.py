"""A status change writes only the columns it changes (SQLite and PostgreSQL):
the compare-and-set ``UPDATE`` of a reject sets the session's status and
closure deadline, never its ``expires_at`` (a host's value in its own column
type, read and written back, moved 7 hours on a zone mismatch); an accept
sets the expiry it moves.  The guard on the status stays."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from sqlalchemy import event

from extension_fsm.adapters.clock import VirtualClock
from extension_fsm.adapters.sqlalchemy import SqlAlchemyStore
from extension_fsm.model import ExtensionStatus
from tests.integration.host_rows import T0, requested


def _set_columns(statements: list[str], table: str) -> list[set[str]]:
    """The columns each ``UPDATE table SET …`` of ``statements`` sets."""
    found = []
    for sql in statements:
        for m in re.finditer(rf"UPDATE {table} SET (.*?) WHERE", sql, re.S):
            found.append({part.split("=")[0].strip() for part in m.group(1).split(",")})
    return found


async def _answered(store: SqlAlchemyStore, accepted: bool) -> list[str]:
    """The SQL of an answer (the statements run while it is answered)."""
    clock = VirtualClock(T0)
    service, ext = await requested(store, clock)
    engine: Any = store.database.engine
    sync = getattr(engine, "sync_engine", engine)
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    event.listen(sync, "before_cursor_execute", record)
    try:
        done = await service.respond_to_extension(
            extension_id=ext.id, session_id="s1", mitra_id="m1", accepted=accepted
        )
    finally:
        event.remove(sync, "before_cursor_execute", record)
    assert done.status is (ExtensionStatus.ACCEPTED if accepted else ExtensionStatus.REJECTED)
    await service.aclose()
    return seen


async def test_a_reject_writes_the_session_status_and_closure_deadline_only(
    sql_backend: SqlAlchemyStore,
) -> None:
    seen = await _answered(sql_backend, accepted=False)
    t = sql_backend.tables
    assert _set_columns(seen, t.sessions.name) == [{"status", "closure_deadline"}]
    assert _set_columns(seen, t.payments.name) == [{"status", "failure_cause"}]
    (extension,) = _set_columns(seen, t.extensions.name)
    assert "expires_at" not in extension and "requested_at" not in extension
    assert {"status", "responded_at"} <= extension
    # the guard: each UPDATE names the status it expects
    assert all(
        re.search(rf"UPDATE {name} SET .*? WHERE .*status", sql, re.S)
        for sql in seen
        for name in (t.sessions.name, t.payments.name, t.extensions.name)
        if f"UPDATE {name} SET" in sql
    )
    dump = await sql_backend.dump()
    assert [s.expires_at for s in dump.sessions] == [T0 + timedelta(minutes=5)]


async def test_an_accept_writes_the_expiry_it_moves(sql_backend: SqlAlchemyStore) -> None:
    seen = await _answered(sql_backend, accepted=True)
    (session,) = _set_columns(seen, sql_backend.tables.sessions.name)
    assert session == {"status", "expires_at"}
