"""The inline SQLite driver writes a decision through ``sqlite3`` directly
(``sqlite_direct``); ``+aiosqlite`` writes it through the repositories, one
SQLAlchemy statement per table.  The same script must leave the same rows on
both, and the same rows as the in-memory store."""

from __future__ import annotations

import itertools
import sqlite3
from contextlib import closing
from datetime import timedelta
from pathlib import Path

from extension_fsm.adapters.memory import MemoryStore
from extension_fsm.adapters.rowwise import RowWriter
from extension_fsm.adapters.sqlalchemy import SqlAlchemyStore
from extension_fsm.invariants import check_invariants
from extension_fsm.model import ExtensionStatus, Participant
from extension_fsm.ports import InspectableStore, StoreDump
from extension_fsm.simulator import World, make_payment, make_session


async def _script(store: InspectableStore) -> StoreDump:
    ids = itertools.count()
    w = World(store=store, new_id=lambda: f"id{next(ids):04d}")
    now = w.clock.now()
    for n in (1, 2, 3):
        session = make_session(f"s{n}", expires_at=now + timedelta(minutes=5))
        await w.add_session(session)
        await w.add_payment(make_payment(f"p{n}"))
        # s1's mitra on the session's socket, s2's only online, s3's gone: every delivery path
        w.connect(session, Participant.MITRA, on_session_socket=n == 1, online=n < 3)
    svc = w.service
    a = await svc.request_extension(
        session_id="s1",
        customer_id="c1",
        duration_minutes=10,
        price=15000,
        extension_payment_session_id="p1",
    )
    await w.settle()
    b = await svc.request_extension(
        session_id="s2",
        customer_id="c1",
        duration_minutes=20,
        price=15000,
        extension_payment_session_id="p2",
    )
    c = await svc.request_extension(
        session_id="s3",
        customer_id="c1",
        duration_minutes=30,
        price=15000,
        extension_payment_session_id="p3",
    )
    await w.settle()
    await svc.respond_to_extension(extension_id=a.id, session_id="s1", mitra_id="m1", accepted=True)
    await w.settle()
    await svc.respond_to_extension(
        extension_id=b.id, session_id="s2", mitra_id="m1", accepted=False
    )
    await w.settle()
    await w.settle()
    await w.clock.advance(120)  # c times out; sessions run on
    dump = await store.dump()
    assert [e.status for e in dump.extensions if e.id == c.id] != [ExtensionStatus.PENDING]
    assert check_invariants(dump, now=w.clock.now()) == []
    return dump


async def test_inline_sqlite_writes_the_same_rows_as_aiosqlite_and_memory(tmp_path: Path) -> None:
    inline = await SqlAlchemyStore.open(f"sqlite:///{tmp_path / 'inline.db'}", create_schema=True)
    threaded = await SqlAlchemyStore.open(
        f"sqlite+aiosqlite:///{tmp_path / 'threaded.db'}", create_schema=True
    )
    try:
        assert inline.database.is_inline and not threaded.database.is_inline
        async with inline.unit_of_work() as uow:
            assert not isinstance(uow.write_batch, RowWriter)  # the direct path under test
        async with threaded.unit_of_work() as uow:
            assert isinstance(uow.write_batch, RowWriter)  # row by row, through the repositories
        expected = await _script(MemoryStore())
        assert len(expected.ledger) == 1 and len(expected.log) >= 9 and expected.outbox
        assert await _script(inline) == expected
        assert await _script(threaded) == expected
    finally:
        await inline.aclose()
        await threaded.aclose()
    # Byte for byte: the stored text (timestamps, JSON, booleans) is the same too.
    stored = [_raw_rows(tmp_path / name) for name in ("inline.db", "threaded.db")]
    assert stored[0] == stored[1]
    assert stored[0]["extensions"] and stored[0]["extension_outbox"]


def _raw_rows(path: Path) -> dict[str, list[tuple[object, ...]]]:
    with closing(sqlite3.connect(path)) as conn:
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {n: conn.execute(f'SELECT * FROM "{n}" ORDER BY 1').fetchall() for n in names}


async def test_direct_reads_equal_sqlalchemy_reads(tmp_path: Path) -> None:
    """Each prebuilt SELECT read straight through ``sqlite3`` gives the values
    SQLAlchemy gives (types, time zones, booleans, the customer join)."""
    store = await SqlAlchemyStore.open(f"sqlite:///{tmp_path / 'reads.db'}", create_schema=True)
    try:
        await _script(store)
        dump = await store.dump()
        async with store.unit_of_work() as uow:
            st = uow.statements
            keys = [
                (st.session_by_id, [s.id for s in dump.sessions] + ["nope"]),
                (st.payment_by_id, [p.id for p in dump.payments] + ["nope"]),
                (st.extension_by_id, [e.id for e in dump.extensions] + ["nope"]),
                (st.pending_for_session, [s.id for s in dump.sessions]),
                (st.live_for_payment, [p.id for p in dump.payments]),
            ]
            seen = 0
            for stmt, ids in keys:
                for key in ids:
                    direct = await uow.first(stmt, {"key": key})
                    via_sqlalchemy = (await uow.execute(stmt, {"key": key})).first()
                    assert (direct is None) == (via_sqlalchemy is None), (stmt, key)
                    if direct is not None:
                        assert type(direct) is not type(via_sqlalchemy)  # really the direct path
                        assert direct._asdict() == via_sqlalchemy._asdict(), (stmt, key)
                        seen += 1
            assert seen >= 10  # 3 sessions, 3 payments, 3 extensions, a live payment
    finally:
        await store.aclose()
