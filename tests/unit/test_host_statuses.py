"""Statuses the host wrote that the library does not know, and rows the host
deleted, decided by the pure core: refused with the seed's 409, or timed out
uncharged; never a crash, never a charge."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from extension_fsm import (
    Extension,
    ExtensionError,
    ExtensionStatus,
    Facts,
    PaymentStatus,
    SessionStatus,
    Snapshot,
    TimeoutAction,
    decide,
)
from extension_fsm.model import EndSession, TimeoutExtension, set_aside_delay
from extension_fsm.simulator import make_payment, make_session

T0 = datetime(2026, 1, 1, tzinfo=UTC)
EXTENDING = make_session(status=SessionStatus.EXTENDING, expires_at=T0)
PAYMENT = make_payment()
PENDING = Extension(
    "e1", "s1", 30, 15000, "p1", ExtensionStatus.PENDING, T0, T0 + timedelta(seconds=10), 10
)
DUE = Facts(now=T0 + timedelta(seconds=11), mitra_connected=True, mitra_online=True)


def test_a_stored_status_is_read_as_known_or_as_unknown_with_its_text() -> None:
    assert SessionStatus.read("extending") == (SessionStatus.EXTENDING, None)
    assert SessionStatus.read("suspended") == (SessionStatus.UNKNOWN, "suspended")
    assert SessionStatus.read("unknown") == (SessionStatus.UNKNOWN, "unknown")
    assert PaymentStatus.read("confirmed") == (PaymentStatus.CONFIRMED, None)
    assert PaymentStatus.read("refunded") == (PaymentStatus.UNKNOWN, "refunded")


def test_a_due_extension_whose_session_row_is_gone_times_out_uncharged() -> None:
    decision = decide(
        Snapshot(session=None, extension=PENDING, payment=PAYMENT), TimeoutExtension("e1"), DUE
    )
    assert decision.extension is not None
    assert decision.extension.row.status is ExtensionStatus.TIMEOUT
    assert decision.payment is not None and decision.payment.row.status is PaymentStatus.FAILED
    assert decision.session is None and decision.ledger is None
    # no one left to message; the host's money side still hears of the failure
    assert [type(e).__name__ for e in decision.effects] == ["PaymentFailed"]


def test_a_host_status_never_approves_a_timeout() -> None:
    suspended = replace(EXTENDING, status=SessionStatus.UNKNOWN, unknown_status="suspended")
    refunded = replace(PAYMENT, status=PaymentStatus.UNKNOWN, unknown_status="refunded")
    for session, payment in ((suspended, PAYMENT), (EXTENDING, refunded)):
        snapshot = Snapshot(session=session, extension=PENDING, payment=payment)
        decision = decide(snapshot, TimeoutExtension("e1"), DUE)
        assert decision.extension is not None
        assert decision.extension.row.status is ExtensionStatus.TIMEOUT
        assert decision.ledger is None
        if session is suspended:
            assert decision.session is None  # the host's row stays as the host set it
            assert decision.payment is not None
            assert decision.payment.row.status is PaymentStatus.FAILED
        else:
            assert decision.payment is None  # the host's refund stays as the host set it
            assert decision.session is not None
            assert decision.session.row.status is SessionStatus.CLOSING
    auto_reject = replace(DUE, timeout_action=TimeoutAction.AUTO_REJECT)
    snapshot = Snapshot(session=suspended, extension=PENDING, payment=PAYMENT)
    assert decide(snapshot, TimeoutExtension("e1"), auto_reject).ledger is None


def test_ending_a_session_in_a_host_status_is_refused_naming_it() -> None:
    suspended = replace(EXTENDING, status=SessionStatus.UNKNOWN, unknown_status="suspended")
    with pytest.raises(ExtensionError) as refused:
        decide(Snapshot(session=suspended), EndSession("s1"), DUE)
    assert refused.value.status_code == 409 and "suspended" in refused.value.message


def test_set_aside_backoff_doubles_from_30_seconds_to_an_hour() -> None:
    delays = [set_aside_delay(n).total_seconds() for n in range(1, 10)]
    assert delays[:5] == [30, 60, 120, 240, 480]
    assert delays == sorted(delays) and delays[-1] == 3600
    assert set_aside_delay(10**6) == timedelta(hours=1)
