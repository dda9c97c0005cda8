"""The SQL store's joined reads (``uow.snapshots``) give the rows each table
holds (read one table at a time by ``store.dump()``), and two workers' reads
of a due batch never share a row."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import pytest

from extension_fsm.adapters.sqlalchemy import SqlAlchemyStore
from extension_fsm.core import Snapshot
from extension_fsm.model import Extension, ExtensionStatus, Session, SessionStatus
from extension_fsm.ports import StoreDump
from extension_fsm.simulator import make_payment, make_session
from extension_fsm.testing.samples import add_committed

T0 = datetime(2026, 1, 1, tzinfo=UTC)
T = TypeVar("T")


def ext(ext_id: str, session_id: str, payment_id: str, status: ExtensionStatus) -> Extension:
    return Extension(
        ext_id, session_id, 10, 15000, payment_id, status, T0, T0 + timedelta(seconds=10), 10
    )


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SqlAlchemyStore]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'snap.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    # Its own tables in the module's database: a random prefix (the tail of
    # tmp_path's name repeated across tests in some orders).
    s = await SqlAlchemyStore.open(
        url, create_schema=True, table_prefix=f"n{uuid.uuid4().hex[:8]}_", clock="local"
    )
    try:
        # s1: e1 pending on p1; s2: e2 accepted on p2 (p2 live, nothing pending);
        # s3: another customer and mitra; p3 backs nothing.
        await s.seed_session(make_session("s1", expires_at=T0, customer_display_name="Rina"))
        await s.seed_session(make_session("s2", expires_at=T0))
        await s.seed_session(make_session("s3", expires_at=T0, customer_id="c3", mitra_id="m3"))
        for p in ("p1", "p2", "p3"):
            await s.seed_payment(make_payment(p))
        await add_committed(
            s,
            ext("e1", "s1", "p1", ExtensionStatus.PENDING),
            ext("e2", "s2", "p2", ExtensionStatus.ACCEPTED),
        )
        yield s
    finally:  # closed even when seeding fails (a leaked connection warns in a later test)
        await s.aclose()


def _by_id(rows: Sequence[T], row_id: str | None) -> T | None:
    return next((r for r in rows if r.id == row_id), None)  # type: ignore[attr-defined]


def _separate_request(dump: StoreDump, session_id: str, payment_id: str | None) -> Snapshot:
    """What the request's read should give, found in the rows of each table."""
    session: Session | None = _by_id(dump.sessions, session_id)
    if session is None:
        return Snapshot(session=None)
    live = (ExtensionStatus.PENDING, ExtensionStatus.ACCEPTED)
    return Snapshot(
        session=session,
        payment=_by_id(dump.payments, payment_id) if payment_id else None,
        pending=next(
            (
                e
                for e in dump.extensions
                if e.session_id == session_id and e.status is ExtensionStatus.PENDING
            ),
            None,
        ),
        payment_live=next(
            (
                e
                for e in dump.extensions
                if payment_id and e.payment_session_id == payment_id and e.status in live
            ),
            None,
        ),
    )


def _separate_extension(dump: StoreDump, session_id: str | None, ext_id: str) -> Snapshot:
    """What an answer's (or, with no ``session_id``, the timeout's) read should give."""
    x = _by_id(dump.extensions, ext_id)
    if session_id is None:  # the timeout's read: the extension's own session
        if x is None:
            return Snapshot(session=None)
        session_id = x.session_id
    session = _by_id(dump.sessions, session_id)
    if session is None:
        return Snapshot(session=None)
    payment = _by_id(dump.payments, x.payment_session_id) if x is not None else None
    return Snapshot(session=session, extension=x, payment=payment)


@pytest.mark.parametrize(
    ("session_id", "payment_id"),
    [
        ("s1", "p1"),  # pending here, payment live
        ("s2", "p2"),  # no pending, payment live through an accepted extension
        ("s2", "p3"),  # nothing live
        ("s3", "p1"),  # another customer's payment
        ("s1", None),
        ("s1", ""),
        ("s1", "nope"),
        ("nope", "p1"),
    ],
)
async def test_request_read_matches_the_row_by_row_reads(
    store: SqlAlchemyStore, session_id: str, payment_id: str | None
) -> None:
    dump = await store.dump()
    async with store.unit_of_work() as uow:
        joined = await uow.snapshots.for_request(session_id, payment_id)
    assert joined == _separate_request(dump, session_id, payment_id)
    if session_id == "s1" and payment_id == "p1":
        assert joined.session is not None and joined.session.customer_display_name == "Rina"
        assert joined.pending is not None and joined.pending.id == "e1"
        assert joined.payment_live == joined.pending


@pytest.mark.parametrize(
    ("session_id", "ext_id"),
    [("s1", "e1"), ("s2", "e2"), ("s1", "e2"), ("s1", "nope"), ("nope", "e1"), ("s3", "e1")],
)
async def test_response_read_matches_the_row_by_row_reads(
    store: SqlAlchemyStore, session_id: str, ext_id: str
) -> None:
    dump = await store.dump()
    async with store.unit_of_work() as uow:
        joined = await uow.snapshots.for_response(session_id, ext_id)
    assert joined == _separate_extension(dump, session_id, ext_id)
    if (session_id, ext_id) == ("s1", "e1"):
        assert joined.extension is not None and joined.payment is not None
        assert joined.payment.id == "p1"


@pytest.mark.parametrize("ext_id", ["e1", "e2", "nope"])
async def test_timeout_read_matches_the_row_by_row_reads(
    store: SqlAlchemyStore, ext_id: str
) -> None:
    dump = await store.dump()
    async with store.unit_of_work() as uow:
        joined = await uow.snapshots.for_timeout(ext_id)
    assert joined == _separate_extension(dump, None, ext_id)
    assert (joined.extension is None) == (ext_id == "nope")


@pytest.mark.postgres
async def test_timeout_reads_lock_nothing_and_the_second_write_does_nothing(pg_url: str) -> None:
    """Two workers time one extension out: both read it (nothing is locked
    between a read and its write), the first write lands, the second writes
    nothing and raises ``ConcurrencyConflict``."""
    from extension_fsm import core
    from extension_fsm.errors import ConcurrencyConflict
    from extension_fsm.model import Facts, TimeoutExtension

    store = await SqlAlchemyStore.open(
        pg_url, create_schema=True, table_prefix="snapskip_", clock="local"
    )
    try:
        await store.seed_session(make_session("s1", expires_at=T0, status=SessionStatus.EXTENDING))
        await store.seed_payment(make_payment("p1"))
        await add_committed(store, ext("e1", "s1", "p1", ExtensionStatus.PENDING))
        late = Facts(now=T0 + timedelta(hours=1))
        async with store.unit_of_work() as first, store.unit_of_work() as second:
            a = core.decide(await first.snapshots.for_timeout("e1"), TimeoutExtension("e1"), late)
            b = core.decide(await second.snapshots.for_timeout("e1"), TimeoutExtension("e1"), late)
            assert a.extension is not None and b.extension is not None  # both read it
            await first.write_batch(a.extension, a.session, a.payment, a.ledger, a.log, [])
            await first.commit()
            with pytest.raises(ConcurrencyConflict):
                await second.write_batch(b.extension, b.session, b.payment, b.ledger, b.log, [])
                await second.commit()
        dump = await store.dump()
        assert [e.status for e in dump.extensions] == [ExtensionStatus.TIMEOUT]
        assert len(dump.log) == len(a.log)  # the audit written once
    finally:
        await store.aclose()


async def test_due_read_matches_the_row_by_row_reads(store: SqlAlchemyStore) -> None:
    # e3 due first, e1 next; e4 not yet due
    await add_committed(
        store, replace(ext("e3", "s3", "p3", ExtensionStatus.PENDING), expires_at=T0)
    )
    await store.seed_session(make_session("s4", expires_at=T0))
    await store.seed_payment(make_payment("p4"))
    later = T0 + timedelta(hours=1)
    await add_committed(
        store, replace(ext("e4", "s4", "p4", ExtensionStatus.PENDING), expires_at=later)
    )
    now = T0 + timedelta(minutes=1)
    dump = await store.dump()
    async with store.unit_of_work() as uow:
        due_ids = await uow.snapshots.due_ids(now, 10)
        assert due_ids == ["e3", "e1"]
        expected = [_separate_extension(dump, None, i) for i in due_ids]
        assert await uow.snapshots.for_due(T0 - timedelta(minutes=1), 10) == []
        assert await uow.snapshots.for_due(now, 1) == expected[:1]
        # PostgreSQL claimed e3 (a lease): the next batch is the rest; SQLite
        # reads inside its one write lock and claims nothing.
        rest = expected[1:] if store.database.is_postgres else expected
        assert await uow.snapshots.for_due(now, 10) == rest


@pytest.mark.postgres
async def test_due_reads_of_two_workers_never_share_a_row(pg_url: str) -> None:
    store = await SqlAlchemyStore.open(
        pg_url, create_schema=True, table_prefix="snapdue_", clock="local"
    )
    try:
        for n in range(6):
            await store.seed_session(
                make_session(f"s{n}", expires_at=T0, status=SessionStatus.EXTENDING)
            )
            await store.seed_payment(make_payment(f"p{n}"))
        await add_committed(
            store, *(ext(f"e{n}", f"s{n}", f"p{n}", ExtensionStatus.PENDING) for n in range(6))
        )
        now = T0 + timedelta(minutes=1)
        async with store.unit_of_work() as first:
            mine = [s.extension.id for s in await first.snapshots.for_due(now, 4) if s.extension]
            async with store.unit_of_work() as second:
                theirs = await second.snapshots.for_due(now, 4)
                rest = [s.extension.id for s in theirs if s.extension]
        assert mine == ["e0", "e1", "e2", "e3"]
        assert rest == ["e4", "e5"]  # the first worker's rows are skipped, not waited for
    finally:
        await store.aclose()


@pytest.mark.timeout(30)
async def test_a_sweep_batch_of_rows_it_cannot_resolve_ends(
    store: SqlAlchemyStore, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A due extension the core refuses to decide is logged and set aside, and the
    batch sweep returns instead of claiming the same rows for ever."""
    from extension_fsm import core
    from extension_fsm.adapters.clock import VirtualClock
    from extension_fsm.errors import ErrorCode, ExtensionError
    from extension_fsm.simulator import World

    def refuse(*_: object) -> core.Decision:
        raise ExtensionError(ErrorCode.INVALID_STATE, "refused for the test")

    monkeypatch.setattr(core, "decide", refuse)
    w = World(store=store, clock=VirtualClock(T0 + timedelta(minutes=1)), sweep_interval=None)
    w.service._sweep_batch = 1  # type: ignore[attr-defined]  # a batch of only the bad row
    assert await w.service.sweep_due() == []
    assert "set extension e1 aside" in caplog.text
    assert next(e for e in (await store.dump()).extensions if e.id == "e1").status is (
        ExtensionStatus.PENDING
    )


async def test_the_sweep_resolves_an_extension_whose_session_the_host_moved(
    store: SqlAlchemyStore,
) -> None:
    """e1 is pending on s1, which the host left ``active``: once due it times out,
    uncharged, and s1 stays as the host set it."""
    from extension_fsm.adapters.clock import VirtualClock
    from extension_fsm.model import PaymentStatus
    from extension_fsm.simulator import World

    w = World(store=store, clock=VirtualClock(T0 + timedelta(minutes=1)), sweep_interval=None)
    swept = await w.service.sweep_due()
    await w.settle()  # its deliveries end before the store closes
    assert [(e.id, e.status) for e in swept] == [("e1", ExtensionStatus.TIMEOUT)]
    dump = await store.dump()
    assert next(s for s in dump.sessions if s.id == "s1").status is SessionStatus.ACTIVE
    assert next(p for p in dump.payments if p.id == "p1").status is PaymentStatus.FAILED
    assert dump.ledger == []
