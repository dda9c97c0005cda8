"""The guard of a decision's one write on PostgreSQL: the write locks the rows
it changes and checks each still holds the status and the values the decision
read; if any moved since the read, it writes nothing at all (not the ledger,
not the outbox, not the other rows) and raises ``ConcurrencyConflict``.

Each guarded column of an accept is changed by another connection between the
read and the write, one per test; the write then changes nothing, and the
other connection's change stands.  Without such a change the same write
succeeds (the control), so the guard is what stops it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import update

from extension_fsm import core
from extension_fsm.adapters.clock import VirtualClock
from extension_fsm.adapters.sqlalchemy import SqlAlchemyStore
from extension_fsm.errors import ConcurrencyConflict
from extension_fsm.model import (
    ExtensionStatus,
    Facts,
    PaymentStatus,
    RespondToExtension,
)
from tests.conftest import empty_tables
from tests.integration.host_rows import T0, requested

pytestmark = pytest.mark.postgres

#: (table, column) an accept writes and guards: each changed column, with the status
GUARDED = [
    ("extensions", "status"),
    ("extensions", "responded_at"),
    ("chat_sessions", "status"),
    ("chat_sessions", "expires_at"),
    ("payment_sessions", "status"),
]


@pytest.fixture
async def store(pg_url: str) -> AsyncIterator[SqlAlchemyStore]:
    s = await SqlAlchemyStore.open(pg_url, create_schema=True, clock="local")
    await s.database.run_sync(empty_tables(s))
    try:
        yield s
    finally:
        await s.aclose()


async def _pending(store: SqlAlchemyStore, clock: VirtualClock) -> str:
    service, ext = await requested(store, clock)
    await service.aclose()
    return ext.id


def _other(value: Any, table: str, column: str) -> Any:
    """A different value of the same kind, as another writer would leave it."""
    if column == "status":
        return {"extensions": "rejected", "chat_sessions": "closing", "payment_sessions": "failed"}[
            table
        ]
    if isinstance(value, datetime):
        return value + timedelta(seconds=7)
    if value is None:
        return T0 + timedelta(seconds=7)
    raise AssertionError(f"no other value for {column}={value!r}")


def _guarded(uow: Any, decision: core.Decision) -> set[tuple[str, str]]:
    """What the unit of work's write of ``decision`` guards, by (table, column)."""
    found: set[tuple[str, str]] = set()
    for change in (decision.extension, decision.session, decision.payment):
        if change is not None and change.expected is not None:
            write = uow._write(change.row, change.expected)
            found.add((write.table.name, "status"))
            found.update((write.table.name, c) for c in write.before)
    return found


async def _accept(store: SqlAlchemyStore, ext_id: str, clock: VirtualClock) -> tuple[Any, Any]:
    """An accept read and decided in an open unit of work (not written yet)."""
    uow = store.unit_of_work()
    await uow.__aenter__()
    snapshot = await uow.snapshots.for_response("s1", ext_id)
    decision = core.decide(
        snapshot, RespondToExtension(ext_id, "s1", "m1", True), Facts(now=clock.now())
    )
    assert decision.extension is not None
    assert decision.extension.row.status is ExtensionStatus.ACCEPTED
    return uow, decision


async def _write(uow: Any, d: core.Decision) -> None:
    try:
        await uow.write_batch(d.extension, d.session, d.payment, d.ledger, d.log, [])
        await uow.commit()
    finally:
        await uow.__aexit__(None, None, None)


async def test_the_accept_guards_exactly_the_columns_listed(store: SqlAlchemyStore) -> None:
    clock = VirtualClock(T0)
    ext_id = await _pending(store, clock)
    uow, decision = await _accept(store, ext_id, clock)
    assert _guarded(uow, decision) == set(GUARDED)
    await _write(uow, decision)  # the control: nothing moved, the write lands
    dump = await store.dump()
    assert [e.status for e in dump.extensions] == [ExtensionStatus.ACCEPTED]
    assert [p.status for p in dump.payments] == [PaymentStatus.CONSUMED]
    assert len(dump.ledger) == 1


@pytest.mark.parametrize(("table", "column"), GUARDED)
async def test_a_guarded_column_changed_after_the_read_makes_the_write_do_nothing(
    store: SqlAlchemyStore, table: str, column: str
) -> None:
    clock = VirtualClock(T0)
    ext_id = await _pending(store, clock)
    key = {"extensions": ext_id, "chat_sessions": "s1", "payment_sessions": "p1"}[table]
    uow, decision = await _accept(store, ext_id, clock)
    t = store.tables.metadata.tables[table]
    # another writer, on its own connection, changes the column and commits
    before = await store.database.run_sync(
        lambda conn: conn.execute(t.select().where(t.c.id == key)).one()._mapping[column]
    )
    changed = _other(before, table, column)
    await store.database.run_sync(
        lambda conn: conn.execute(update(t).where(t.c.id == key).values({column: changed}))
    )
    dump_before = await store.dump()
    with pytest.raises(ConcurrencyConflict):
        await _write(uow, decision)
    dump = await store.dump()
    assert dump == dump_before  # nothing of the decision written, the change stands
    assert dump.ledger == []
    after = await store.database.run_sync(
        lambda conn: conn.execute(t.select().where(t.c.id == key)).one()._mapping[column]
    )
    assert after == changed
