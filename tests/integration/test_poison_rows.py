"""Nothing the host writes can poison the flow (memory, SQLite, PostgreSQL).

A status the library does not know is read as UNKNOWN and decided on; a due
extension whose rows cannot be decided is set aside (logged once, retried with
backoff) and never blocks the rows behind it; an extension whose session row
is gone times out uncharged.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import text

from extension_fsm import core
from extension_fsm.adapters.clock import VirtualClock
from extension_fsm.errors import ErrorCode, ExtensionError
from extension_fsm.model import ExtensionStatus, PaymentStatus, SessionStatus
from extension_fsm.simulator import make_payment, make_session
from tests.integration.host_rows import T0, Host, host, make_service, pg_url

__all__ = ["host", "pg_url"]  # the fixtures, imported for pytest

LATER = T0 + timedelta(seconds=1)


async def _make_undecidable(h: Host, extension_id: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Deciding the row raises (every store: what the host writes there now reads,
    unknown texts included; a value the driver cannot read is the last test's)."""
    decide = core.decide

    def refusing(snapshot: core.Snapshot, event: Any, facts: Any) -> core.Decision:
        if snapshot.extension is not None and snapshot.extension.id == extension_id:
            raise RuntimeError("a row nobody can decide")
        return decide(snapshot, event, facts)

    monkeypatch.setattr(core, "decide", refusing)


@pytest.mark.timeout(240)
async def test_poison_one_bad_row_among_1000_due_leaves_999_resolved_in_one_sweep(
    host: Host, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    ids = await host.seed_due(1000)
    bad = ids[450]
    await _make_undecidable(host, bad, monkeypatch)
    clock = VirtualClock(LATER)
    service = make_service(host.store, clock)
    caplog.set_level(logging.ERROR, logger="extension_fsm")

    resolved = await service.sweep_due()

    assert sorted(e.id for e in resolved) == sorted(set(ids) - {bad})
    assert {e.status for e in resolved} == {ExtensionStatus.ACCEPTED}  # mitra reachable
    until, times = await host.set_aside_of(bad)
    assert times == 1 and until is not None and until > clock.now()
    # Set aside: the next passes skip it until its backoff is over, then retry it.
    assert await service.sweep_due() == []
    assert (await host.set_aside_of(bad))[1] == 1
    await clock.advance(3600)
    assert await service.sweep_due() == []
    until2, times2 = await host.set_aside_of(bad)
    assert times2 == 2 and until2 is not None and until2 > clock.now()
    logged = [r for r in caplog.records if f"extension {bad} aside" in r.getMessage()]
    assert len(logged) == 1  # logged once, with its id


async def test_poison_request_and_answer_on_a_host_status_get_409_and_write_nothing(
    host: Host,
) -> None:
    (pending,) = await host.seed_due(1, expires_at=T0 + timedelta(minutes=5))
    await host.store.seed_session(make_session("rs", customer_id="rc", expires_at=T0))
    await host.store.seed_payment(make_payment("rp", customer_id="rc"))
    await host.store.seed_session(make_session("qs", customer_id="qc", expires_at=T0))
    await host.store.seed_payment(make_payment("qp", customer_id="qc"))
    await host.set_session_status("rs", "suspended")
    await host.set_session_status("ds0000", "suspended")  # under the pending extension
    await host.set_payment_status("qp", "refunded")
    service = make_service(host.store, VirtualClock(T0))
    before = await host.store.dump()
    assert {s.id: s.status for s in before.sessions}["rs"] is SessionStatus.UNKNOWN

    with pytest.raises(ExtensionError) as on_session:
        await service.request_extension(
            session_id="rs",
            customer_id="rc",
            duration_minutes=30,
            price=15000,
            extension_payment_session_id="rp",
        )
    assert (on_session.value.code, on_session.value.status_code) == (
        ErrorCode.SESSION_NOT_ACTIVE,
        409,
    )
    with pytest.raises(ExtensionError) as on_payment:
        await service.request_extension(
            session_id="qs",
            customer_id="qc",
            duration_minutes=30,
            price=15000,
            extension_payment_session_id="qp",
        )
    assert (on_payment.value.code, on_payment.value.status_code) == (ErrorCode.INVALID_STATE, 409)
    assert "refunded" in on_payment.value.message
    for accepted in (True, False):
        with pytest.raises(ExtensionError) as answer:
            await service.respond_to_extension(
                extension_id=pending, session_id="ds0000", mitra_id="m1", accepted=accepted
            )
        assert (answer.value.code, answer.value.status_code) == (ErrorCode.SESSION_NOT_ACTIVE, 409)

    assert await host.store.dump() == before  # nothing written
    assert await host.raw_status("sessions", "rs") == "suspended"
    assert await host.raw_status("payments", "qp") == "refunded"


async def test_poison_due_extensions_on_host_statuses_time_out_uncharged(host: Host) -> None:
    ids = await host.seed_due(3)
    await host.set_session_status("ds0000", "suspended")
    await host.set_payment_status("dp0001", "refunded")
    service = make_service(host.store, VirtualClock(LATER))

    resolved = {e.id: e for e in await service.sweep_due()}

    assert set(resolved) == set(ids)
    assert resolved[ids[0]].status is ExtensionStatus.TIMEOUT  # never approved
    assert resolved[ids[1]].status is ExtensionStatus.TIMEOUT
    assert resolved[ids[2]].status is ExtensionStatus.ACCEPTED  # the healthy one
    dump = await host.store.dump()
    assert [entry.extension_id for entry in dump.ledger] == [ids[2]]
    assert await host.raw_status("sessions", "ds0000") == "suspended"  # as the host set it
    assert await host.raw_status("payments", "dp0001") == "refunded"
    payments = {p.id: p.status for p in dump.payments}
    assert payments["dp0000"] is PaymentStatus.FAILED  # confirmed, never charged: released
    assert payments["dp0002"] is PaymentStatus.CONSUMED


async def test_poison_deleted_sessions_do_not_starve_the_healthy_extension_behind_them(
    host: Host,
) -> None:
    gone = await host.seed_due(100, tag="g", expires_at=T0)
    (healthy,) = await host.seed_due(1, tag="h", expires_at=T0 + timedelta(milliseconds=500))
    await host.delete_sessions([f"gs{i:04d}" for i in range(100)])
    service = make_service(host.store, VirtualClock(LATER))

    resolved = {e.id: e for e in await asyncio.wait_for(service.sweep_due(), 60)}

    assert resolved[healthy].status is ExtensionStatus.ACCEPTED  # in the first sweep
    assert set(resolved) == {*gone, healthy}
    assert {resolved[x].status for x in gone} == {ExtensionStatus.TIMEOUT}
    dump = await host.store.dump()
    assert [entry.extension_id for entry in dump.ledger] == [healthy]
    failed = {p.id for p in dump.payments if p.status is PaymentStatus.FAILED}
    assert failed == {f"gp{i:04d}" for i in range(100)}
    assert await service.sweep_due() == []  # nothing left to claim again


async def test_poison_a_value_the_driver_cannot_read_is_found_and_set_aside() -> None:
    """SQLite keeps any text in a timestamp column: the batch read fails as a whole,
    so the sweep goes row by row, sets the culprit aside and resolves the rest."""
    from extension_fsm.adapters.sqlalchemy import SqlAlchemyStore

    store = await SqlAlchemyStore.open("sqlite://", create_schema=True, clock="local")
    try:
        h = Host("sqlite", store)
        ids = await h.seed_due(30)
        t = store.tables.extensions
        async with store.unit_of_work() as uow:
            sql = f"UPDATE {t.name} SET responded_at = 'junk' WHERE id = :id"  # as the host would
            await uow.execute(text(sql), {"id": ids[7]})
            await uow.commit()
        service = make_service(store, VirtualClock(LATER))

        resolved = await service.sweep_due()

        assert sorted(e.id for e in resolved) == sorted(set(ids) - {ids[7]})
        assert (await h.set_aside_of(ids[7]))[1] == 1
        assert await service.sweep_due() == []  # the batch path now skips it
    finally:
        await store.aclose()
