"""A mitra who answered is never overruled into a charge (memory, SQLite,
PostgreSQL): a "no" after the deadline ends the extension uncharged at once,
even where the timeout would auto-approve; a late "yes" lets the deadline decide."""

from __future__ import annotations

from datetime import timedelta

import pytest

from extension_fsm import ExtensionService
from extension_fsm.adapters.clock import VirtualClock
from extension_fsm.errors import ErrorCode, ExtensionError
from extension_fsm.model import (
    Extension,
    ExtensionStatus,
    FailureCause,
    PaymentStatus,
    SessionStatus,
    TimeoutReason,
)
from tests.integration.host_rows import T0, Host, host, pg_url, requested

__all__ = ["host", "pg_url"]  # the fixtures, imported for pytest


async def _requested(h: Host, clock: VirtualClock) -> tuple[ExtensionService, Extension]:
    # auto_approve, the mitra reachable
    return await requested(h.store, clock, session_end=T0 + timedelta(minutes=1))


async def _late_answer(service: ExtensionService, ext: Extension, accepted: bool) -> ExtensionError:
    with pytest.raises(ExtensionError) as late:
        await service.respond_to_extension(
            extension_id=ext.id, session_id="s1", mitra_id="m1", accepted=accepted
        )
    return late.value


async def test_a_late_reject_ends_the_extension_uncharged_never_approved(host: Host) -> None:
    clock = VirtualClock(T0)
    service, ext = await _requested(host, clock)
    await clock.advance(ext.timeout_seconds + 0.05)  # 50 ms past the deadline

    err = await _late_answer(service, ext, accepted=False)

    assert (err.code, err.status_code) == (ErrorCode.EXTENSION_RESOLVED, 409)
    assert await service.sweep_due() == []  # nothing left for the auto-approving sweep
    dump = await host.store.dump()
    (row,) = dump.extensions
    assert row.status is ExtensionStatus.TIMEOUT and row.reason is TimeoutReason.TIMEOUT
    assert row.failure_cause is FailureCause.EXTENSION_REJECTED
    assert dump.ledger == []
    assert [p.status for p in dump.payments] == [PaymentStatus.FAILED]
    assert [s.status for s in dump.sessions] == [SessionStatus.CLOSING]


async def test_a_late_accept_lets_the_deadline_decide(host: Host) -> None:
    clock = VirtualClock(T0)
    service, ext = await _requested(host, clock)
    await clock.advance(ext.timeout_seconds + 0.05)

    err = await _late_answer(service, ext, accepted=True)

    assert (err.code, err.status_code) == (ErrorCode.EXTENSION_RESOLVED, 409)
    (resolved,) = await service.sweep_due()  # the timeout decides, as configured
    assert resolved.status is ExtensionStatus.ACCEPTED and resolved.via_timeout


async def test_a_reject_after_the_timeout_resolved_it_changes_nothing(host: Host) -> None:
    clock = VirtualClock(T0)
    service, ext = await _requested(host, clock)
    await clock.advance(ext.timeout_seconds + 1)
    (resolved,) = await service.sweep_due()
    await service.dispatcher.drain()  # the sweep's deliveries finish before the snapshot
    before = await host.store.dump()

    err = await _late_answer(service, ext, accepted=False)

    assert err.code is ErrorCode.EXTENSION_RESOLVED
    assert resolved.status is ExtensionStatus.ACCEPTED
    assert await host.store.dump() == before
