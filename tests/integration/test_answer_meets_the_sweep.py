"""An answer meets a sweep's approval (PostgreSQL, two stores on one database,
the sweep's steps driven by the test).  Nothing is locked between a read and
its write; the write is guarded, so whichever is written first stands: a
mitra's reject after the approval was written is told the extension is
already resolved, never "The answer window has passed"; one written while the
approval was only decided times the extension out uncharged, and the
approval's write then does nothing.  ``end_session`` likewise: after the
approval it ends the session after the charge; before it, nothing is charged."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from extension_fsm import ExtensionService, core
from extension_fsm.adapters.clock import VirtualClock
from extension_fsm.adapters.sqlalchemy import SqlAlchemyStore
from extension_fsm.errors import ConcurrencyConflict, ErrorCode, ExtensionError
from extension_fsm.model import (
    ExtensionStatus,
    Facts,
    PaymentStatus,
    SessionStatus,
    TimeoutAction,
    TimeoutExtension,
)
from extension_fsm.ports import UnitOfWork
from tests.conftest import empty_tables
from tests.integration.host_rows import T0, make_service, requested

pytestmark = pytest.mark.postgres

#: a guard against a hang, not a speed being measured
BOUND = 60


@pytest.fixture
async def stores(pg_url: str) -> AsyncIterator[tuple[SqlAlchemyStore, SqlAlchemyStore]]:
    a = await SqlAlchemyStore.open(pg_url, create_schema=True, clock="local")
    b = await SqlAlchemyStore.open(pg_url, clock="local")
    await a.database.run_sync(empty_tables(a))
    try:
        yield a, b
    finally:
        await a.aclose()
        await b.aclose()


Due = tuple[SqlAlchemyStore, SqlAlchemyStore, VirtualClock, str, ExtensionService]


@pytest.fixture
async def due(stores: tuple[SqlAlchemyStore, SqlAlchemyStore]) -> AsyncIterator[Due]:
    """The two stores, the clock, a pending extension just past its deadline,
    and a service answering on the first store."""
    a, b = stores
    clock = VirtualClock(T0)
    ext_id = await _due_extension(a, clock)
    service = make_service(a, clock)
    try:
        yield a, b, clock, ext_id, service
    finally:
        await service.aclose()


async def _reject(service: ExtensionService, ext_id: str) -> ExtensionError:
    """What the mitra's reject is told (it is past the window: always refused)."""
    with pytest.raises(ExtensionError) as told:
        await asyncio.wait_for(
            service.respond_to_extension(
                extension_id=ext_id, session_id="s1", mitra_id="m1", accepted=False
            ),
            BOUND,
        )
    return told.value


async def _due_extension(store: SqlAlchemyStore, clock: VirtualClock) -> str:
    service, ext = await requested(store, clock)
    await service.aclose()
    await clock.advance(ext.timeout_seconds + 0.05)  # just past the deadline
    return ext.id


async def _approval(sweep: UnitOfWork, clock: VirtualClock, ext_id: str) -> core.Decision:
    """What another worker's sweep does before its write: claim the due row and
    decide an auto-approval (the mitra reachable)."""
    (snapshot,) = await sweep.snapshots.for_due(clock.now(), 10)
    facts = Facts(
        now=clock.now(),
        timeout_action=TimeoutAction.AUTO_APPROVE,
        mitra_connected=True,
        mitra_online=True,
    )
    approval = core.decide(snapshot, TimeoutExtension(ext_id), facts)  # type: ignore[arg-type]
    assert approval.extension is not None
    assert approval.extension.row.status is ExtensionStatus.ACCEPTED
    return approval


async def _write(sweep: UnitOfWork, d: core.Decision) -> None:
    await sweep.write_batch(d.extension, d.session, d.payment, d.ledger, d.log, [])
    await sweep.commit()


async def test_a_reject_after_the_approval_was_written_is_told_already_resolved(
    due: Due,
) -> None:
    a, b, clock, ext_id, answering = due
    async with b.unit_of_work() as sweep:  # another worker's sweep, claimed and written
        await _write(sweep, await _approval(sweep, clock, ext_id))
    told = await _reject(answering, ext_id)
    assert told.code is ErrorCode.EXTENSION_RESOLVED
    assert told.message != "The answer window has passed"  # the truth: resolved
    dump = await a.dump()
    assert [e.status for e in dump.extensions] == [ExtensionStatus.ACCEPTED]
    assert [p.status for p in dump.payments] == [PaymentStatus.CONSUMED]


async def test_a_reject_written_before_the_approval_makes_the_approval_write_nothing(
    due: Due,
) -> None:
    a, b, clock, ext_id, answering = due
    async with b.unit_of_work() as sweep:
        approval = await _approval(sweep, clock, ext_id)  # decided, not yet written
        told = await _reject(answering, ext_id)
        assert told.message == "The answer window has passed"  # timed out uncharged
        with pytest.raises(ConcurrencyConflict):
            await _write(sweep, approval)
    dump = await a.dump()
    assert [e.status for e in dump.extensions] == [ExtensionStatus.TIMEOUT]
    assert [p.status for p in dump.payments] == [PaymentStatus.FAILED]
    assert dump.ledger == []
    (session,) = dump.sessions
    assert session.expires_at == T0 + timedelta(minutes=5)  # not extended


async def test_end_session_after_the_approval_was_written_ends_after_the_charge(
    due: Due,
) -> None:
    a, b, clock, ext_id, ending = due
    async with b.unit_of_work() as sweep:
        await _write(sweep, await _approval(sweep, clock, ext_id))
    session = await asyncio.wait_for(ending.end_session("s1"), BOUND)
    assert session.status is SessionStatus.ENDED
    dump = await a.dump()
    # the approval was written first: it stands (charged once), the session then ended
    assert [e.status for e in dump.extensions] == [ExtensionStatus.ACCEPTED]
    assert [p.status for p in dump.payments] == [PaymentStatus.CONSUMED]
    assert len(dump.ledger) == 1


async def test_end_session_before_the_approval_was_written_leaves_nothing_charged(
    due: Due,
) -> None:
    a, b, clock, ext_id, ending = due
    async with b.unit_of_work() as sweep:
        approval = await _approval(sweep, clock, ext_id)
        session = await asyncio.wait_for(ending.end_session("s1"), BOUND)
        assert session.status is SessionStatus.ENDED
        with pytest.raises(ConcurrencyConflict):
            await _write(sweep, approval)
    dump = await a.dump()
    assert [e.status for e in dump.extensions] != [ExtensionStatus.ACCEPTED]
    assert [p.status for p in dump.payments] != [PaymentStatus.CONSUMED]
    assert dump.ledger == []


async def test_a_late_reject_times_it_out_itself_and_the_sweep_finds_nothing(
    stores: tuple[SqlAlchemyStore, SqlAlchemyStore],
) -> None:
    a, b = stores
    clock = VirtualClock(T0)
    ext_id = await _due_extension(a, clock)
    answering, sweeping = make_service(a, clock), make_service(b, clock)
    with pytest.raises(ExtensionError) as told:
        await answering.respond_to_extension(
            extension_id=ext_id, session_id="s1", mitra_id="m1", accepted=False
        )
    assert told.value.code is ErrorCode.EXTENSION_RESOLVED
    assert told.value.message == "The answer window has passed"  # timed out uncharged
    dump = await a.dump()
    (row,) = dump.extensions
    assert row.status is ExtensionStatus.TIMEOUT
    assert [p.status for p in dump.payments] == [PaymentStatus.FAILED]
    assert dump.ledger == []
    assert await sweeping.sweep_due() == []  # nothing left to approve
    await answering.aclose()
    await sweeping.aclose()
