"""Stale deadlines never charge, end to end: rows left pending for hours (an
outage, workers stopped, a cutover) are swept with the mitra online now and
time out unpaid with ``reason: "stale"``, on memory, SQLite and PostgreSQL;
workers stopped past the bound and restarted charge nothing; a deadline
handled within the bound still approves."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from extension_fsm import ExtensionService
from extension_fsm.adapters.clock import VirtualClock
from extension_fsm.adapters.config import StaticConfig
from extension_fsm.adapters.memory import (
    MemoryPresence,
    MemoryPush,
    MemorySessionTimer,
    MemorySockets,
)
from extension_fsm.model import (
    ExtensionStatus,
    FailureCause,
    Participant,
    PaymentStatus,
    SessionStatus,
    TimeoutReason,
)
from extension_fsm.simulator import make_payment, make_session
from extension_fsm.sweeper import run_sweep
from tests.integration.host_rows import T0, Host, host, make_service, pg_url

__all__ = ["host", "pg_url"]  # the fixtures, imported for pytest


async def test_stale_deadline_rows_stale_for_hours_never_charge_through_sweep_due(
    host: Host,
) -> None:
    ids = await host.seed_due(3)
    service = make_service(host.store, VirtualClock(T0 + timedelta(hours=3)))  # m1 online

    resolved = await asyncio.wait_for(service.sweep_due(), 60)

    assert sorted(e.id for e in resolved) == ids
    assert {(e.status, e.reason, e.via_timeout) for e in resolved} == {
        (ExtensionStatus.TIMEOUT, TimeoutReason.STALE, True)
    }
    dump = await host.store.dump()
    assert dump.ledger == []
    assert {(p.status, p.failure_cause) for p in dump.payments} == {
        (PaymentStatus.FAILED, FailureCause.EXTENSION_SAFEGUARD_TRIPPED)
    }
    assert {s.status for s in dump.sessions} == {SessionStatus.CLOSING}


async def test_stale_deadline_a_row_swept_within_the_bound_still_approves(host: Host) -> None:
    """The same rows and presence, handled 30 s after the deadline: approved and
    charged, so the stale rule (not the rows or presence) is what refuses above."""
    (ext_id,) = await host.seed_due(1)
    service = make_service(host.store, VirtualClock(T0 + timedelta(seconds=30)))

    (resolved,) = await asyncio.wait_for(service.sweep_due(), 60)

    assert (resolved.id, resolved.status, resolved.via_timeout) == (
        ext_id,
        ExtensionStatus.ACCEPTED,
        True,
    )
    assert len((await host.store.dump()).ledger) == 1


def _worker(host: Host, clock: VirtualClock) -> ExtensionService:
    """A worker process's service: sweep only (no in-process timer), m1 online."""
    sockets = MemorySockets()
    sockets.connected[(Participant.MITRA, "m1")] = True
    return ExtensionService(
        host.store,
        clock=clock,
        config=StaticConfig(timeout_seconds=10),
        sockets=sockets,
        presence=MemoryPresence(online={"m1": True}),
        push=MemoryPush(),
        session_timer=MemorySessionTimer(),
    )


async def _sweep_until_resolved(host: Host, service: ExtensionService, ext_id: str) -> None:
    """Run the sweep loop as a worker does until ``ext_id`` is resolved, then stop it."""
    loop = asyncio.create_task(run_sweep(service, interval=0.01))
    try:
        async with asyncio.timeout(60):
            while True:
                dump = await host.store.dump()
                ext = next(e for e in dump.extensions if e.id == ext_id)
                if ext.status is not ExtensionStatus.PENDING:
                    return
                await asyncio.sleep(0.01)
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)


async def test_stale_deadline_workers_stopped_past_the_bound_and_restarted_never_charge(
    host: Host,
) -> None:
    clock = VirtualClock(T0)
    session = make_session(status=SessionStatus.ACTIVE, expires_at=T0 + timedelta(minutes=30))
    await host.store.seed_session(session)
    await host.store.seed_payment(make_payment())
    before = _worker(host, clock)
    ext = await before.request_extension(
        session_id=session.id,
        customer_id=session.customer_id,
        duration_minutes=15,
        price=15000,
        extension_payment_session_id="p1",
    )
    # The workers stop before the deadline; two hours pass; a new worker starts.
    await before.aclose()
    await clock.advance(2 * 3600)
    after = _worker(host, clock)
    try:
        await _sweep_until_resolved(host, after, ext.id)
    finally:
        await after.aclose()

    dump = await host.store.dump()
    (row,) = dump.extensions
    assert (row.status, row.reason) == (ExtensionStatus.TIMEOUT, TimeoutReason.STALE)
    assert dump.ledger == []
    (payment,) = dump.payments
    assert payment.status is PaymentStatus.FAILED
