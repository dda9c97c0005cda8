"""``decide`` alone: plain values in, plain values out, no I/O."""

from __future__ import annotations

import copy
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from extension_fsm import (
    Extension,
    ExtensionError,
    ExtensionStatus,
    Facts,
    FailureCause,
    PaymentStatus,
    SessionStatus,
    Snapshot,
    TimeoutAction,
    TimeoutReason,
    decide,
)
from extension_fsm.core import NOTHING
from extension_fsm.model import (
    ClearClosureGrace,
    EndSession,
    Notify,
    Participant,
    RequestExtension,
    RespondToExtension,
    SessionExpiryExtended,
    StartClosureGrace,
    TimeoutExtension,
)
from extension_fsm.simulator import make_payment, make_session

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SESSION = make_session(expires_at=T0 + timedelta(minutes=5))
PAYMENT = make_payment(amount=15000)
REQUEST = RequestExtension("s1", "c1", 30, 15000, "p1")


def _pending(**changes: object) -> Extension:
    ext = Extension(
        id="e1",
        session_id="s1",
        duration_minutes=30,
        price=15000,
        payment_session_id="p1",
        status=ExtensionStatus.PENDING,
        requested_at=T0,
        expires_at=T0 + timedelta(seconds=10),
        timeout_seconds=10,
    )
    return replace(ext, **changes)  # type: ignore[arg-type]


EXTENDING = replace(SESSION, status=SessionStatus.EXTENDING)


def _answer_snapshot() -> Snapshot:
    return Snapshot(session=EXTENDING, extension=_pending(), payment=PAYMENT)


def test_request_decides_a_pending_row_a_paused_session_two_notices_and_a_timer() -> None:
    snapshot = Snapshot(session=SESSION, payment=PAYMENT)
    frozen = copy.deepcopy(snapshot)
    facts = Facts(now=T0, timeout_seconds=12, new_extension_id="e9")
    decision = decide(snapshot, REQUEST, facts)
    assert snapshot == frozen  # inputs untouched
    assert decide(snapshot, REQUEST, facts) == decision  # same input, same answer
    assert decision.extension is not None and decision.extension.expected is None
    ext = decision.extension.row
    assert (ext.id, ext.status, ext.expires_at, ext.timeout_seconds) == (
        "e9",
        ExtensionStatus.PENDING,
        T0 + timedelta(seconds=12),
        12,
    )
    assert decision.session is not None
    assert decision.session.expected == "active"
    assert decision.session.row.status is SessionStatus.EXTENDING
    assert decision.payment is None and decision.ledger is None  # charged only on approval
    assert decision.timer == ("e9", T0 + timedelta(seconds=12))
    notices = [e for e in decision.effects if isinstance(e, Notify)]
    assert [(n.recipient, n.message["type"]) for n in notices] == [
        (Participant.MITRA, "extension_request"),
        (Participant.CUSTOMER, "session_paused"),
    ]
    assert [(r.entity, r.from_status, r.to_status) for r in decision.log] == [
        ("extension", None, "pending"),
        ("session", "active", "extending"),
    ]


def test_request_from_closing_pauses_too() -> None:
    closing = replace(SESSION, status=SessionStatus.CLOSING)
    decision = decide(Snapshot(session=closing, payment=PAYMENT), REQUEST, Facts(now=T0))
    assert decision.session is not None and decision.session.expected == "closing"


@pytest.mark.parametrize(
    ("snapshot", "event", "code"),
    [
        (Snapshot(session=None), REQUEST, "SESSION_NOT_ACTIVE"),
        (Snapshot(session=EXTENDING, payment=PAYMENT), REQUEST, "SESSION_NOT_ACTIVE"),
        (Snapshot(session=SESSION, payment=PAYMENT), replace(REQUEST, customer_id="x"),
         "SESSION_NOT_ACTIVE"),
        (Snapshot(session=SESSION), replace(REQUEST, payment_session_id=None), "VALIDATION_ERROR"),
        (Snapshot(session=SESSION), REQUEST, "NOT_FOUND"),
        (Snapshot(session=SESSION, payment=replace(PAYMENT, customer_id="c2")), REQUEST,
         "NOT_FOUND"),
        (Snapshot(session=SESSION, payment=replace(PAYMENT, status=PaymentStatus.PENDING)),
         REQUEST, "INVALID_STATE"),
        (Snapshot(session=SESSION, payment=replace(PAYMENT, is_extension=False)), REQUEST,
         "INVALID_STATE"),
        (Snapshot(session=SESSION, payment=replace(PAYMENT, is_first_session_discount=True)),
         REQUEST, "FIRST_SESSION_DISCOUNT_NOT_ALLOWED"),
        (Snapshot(session=SESSION, payment=PAYMENT), replace(REQUEST, price=14999),
         "VALIDATION_ERROR"),
        (Snapshot(session=SESSION, payment=PAYMENT, pending=_pending(id="e0")), REQUEST,
         "EXTENSION_PENDING"),
        (Snapshot(session=SESSION, payment=PAYMENT, payment_live=_pending(session_id="s2")),
         REQUEST, "PAYMENT_IN_USE"),
    ],
)  # fmt: skip
def test_request_refusals(snapshot: Snapshot, event: RequestExtension, code: str) -> None:
    with pytest.raises(ExtensionError) as info:
        decide(snapshot, event, Facts(now=T0))
    assert info.value.code.value == code


@pytest.mark.parametrize("duration", [0, -5, 1441, 10**9, True, False, 1.5, "30", None])
def test_duration_must_be_a_whole_number_of_minutes_in_1_to_1440(duration: object) -> None:
    with pytest.raises(ExtensionError) as info:
        decide(
            Snapshot(session=SESSION, payment=PAYMENT),
            replace(REQUEST, duration_minutes=duration),
            Facts(now=T0),
        )
    assert (info.value.code.value, info.value.status_code) == ("VALIDATION_ERROR", 422)


@pytest.mark.parametrize(("price", "duration"), [(15000.0, 30), (1.5e4, 30.0), (15000, 1440.0)])
def test_a_whole_number_written_as_a_float_is_taken_as_the_node_service_took_it(
    price: float, duration: float
) -> None:
    decision = decide(
        Snapshot(session=SESSION, payment=PAYMENT),
        replace(REQUEST, price=price, duration_minutes=duration),
        Facts(now=T0, new_extension_id="e1"),
    )
    assert decision.extension is not None
    row = decision.extension.row
    assert (row.price, row.duration_minutes) == (15000, int(duration))
    assert type(row.price) is int and type(row.duration_minutes) is int


@pytest.mark.parametrize("duration", [1, 1440])
def test_duration_bounds_are_inclusive(duration: int) -> None:
    decision = decide(
        Snapshot(session=SESSION, payment=PAYMENT),
        replace(REQUEST, duration_minutes=duration),
        Facts(now=T0, new_extension_id="e1"),
    )
    assert decision.extension is not None
    assert decision.extension.row.duration_minutes == duration


@pytest.mark.parametrize("price", [True, 15000.5, float("nan"), "15000", 0, -15000, 0.0])
def test_price_must_be_a_positive_whole_number(price: object) -> None:
    with pytest.raises(ExtensionError) as info:
        decide(
            Snapshot(session=SESSION, payment=PAYMENT),
            replace(REQUEST, price=price),
            Facts(now=T0),
        )
    assert info.value.code.value == "VALIDATION_ERROR"


def test_accept_consumes_charges_extends_and_resumes() -> None:
    now = T0 + timedelta(seconds=4)
    decision = decide(
        _answer_snapshot(), RespondToExtension("e1", "s1", "m1", True), Facts(now=now)
    )
    assert decision.extension is not None and decision.extension.expected == "pending"
    assert decision.extension.row.status is ExtensionStatus.ACCEPTED
    assert decision.extension.row.responded_at == now
    assert decision.payment is not None and decision.payment.row.status is PaymentStatus.CONSUMED
    assert decision.session is not None
    assert decision.session.row.status is SessionStatus.ACTIVE
    new_expiry = SESSION.expires_at + timedelta(minutes=30)
    assert decision.session.row.expires_at == new_expiry
    assert decision.ledger is not None and decision.ledger.amount == 15000
    assert decision.effects[:2] == (
        ClearClosureGrace("s1"),
        SessionExpiryExtended("s1", new_expiry),
    )
    assert decision.resolved == "e1" and decision.timer is None


def test_accept_after_the_session_expired_extends_from_now() -> None:
    session = replace(EXTENDING, expires_at=T0 - timedelta(minutes=2))
    snapshot = replace(_answer_snapshot(), session=session)
    decision = decide(snapshot, RespondToExtension("e1", "s1", "m1", True), Facts(now=T0))
    assert decision.session is not None
    assert decision.session.row.expires_at == T0 + timedelta(minutes=30)


def test_reject_fails_the_payment_and_closes_with_grace() -> None:
    facts = Facts(now=T0, grace_seconds=45)
    decision = decide(_answer_snapshot(), RespondToExtension("e1", "s1", "m1", False), facts)
    assert decision.extension is not None
    assert decision.extension.row.status is ExtensionStatus.REJECTED
    assert decision.extension.row.failure_cause is FailureCause.EXTENSION_REJECTED
    assert decision.payment is not None
    assert decision.payment.row.failure_cause is FailureCause.EXTENSION_REJECTED
    assert decision.session is not None
    assert decision.session.row.status is SessionStatus.CLOSING
    assert decision.session.row.closure_deadline == T0 + timedelta(seconds=45)
    assert StartClosureGrace("s1", T0 + timedelta(seconds=45)) in decision.effects
    assert decision.ledger is None


@pytest.mark.parametrize(
    ("snapshot", "event", "code"),
    [
        (_answer_snapshot(), RespondToExtension("e1", "s1", "m2", True), "FORBIDDEN"),
        (Snapshot(session=None), RespondToExtension("e1", "s1", "m1", True), "FORBIDDEN"),
        (_answer_snapshot(), RespondToExtension("e1", "s9", "m1", True), "FORBIDDEN"),
        # The seed's one answer for an unknown, foreign or resolved extension.
        (replace(_answer_snapshot(), extension=None), RespondToExtension("e1", "s1", "m1", True),
         "EXTENSION_RESOLVED"),
        (replace(_answer_snapshot(), extension=_pending(session_id="s2")),
         RespondToExtension("e1", "s1", "m1", True), "EXTENSION_RESOLVED"),
        (replace(_answer_snapshot(), extension=_pending(status=ExtensionStatus.REJECTED)),
         RespondToExtension("e1", "s1", "m1", True), "EXTENSION_RESOLVED"),
    ],
)  # fmt: skip
def test_respond_refusals(snapshot: Snapshot, event: RespondToExtension, code: str) -> None:
    with pytest.raises(ExtensionError) as info:
        decide(snapshot, event, Facts(now=T0))
    assert info.value.code.value == code


@pytest.mark.parametrize("accepted", [True, False])
def test_an_answer_at_or_after_the_deadline_is_too_late(accepted: bool) -> None:
    with pytest.raises(ExtensionError) as info:
        decide(
            _answer_snapshot(),
            RespondToExtension("e1", "s1", "m1", accepted),
            Facts(now=T0 + timedelta(seconds=10)),
        )
    assert info.value.code.value == "EXTENSION_RESOLVED"


@pytest.mark.parametrize(
    ("action", "reachable", "status", "cause", "reason"),
    [
        (TimeoutAction.AUTO_APPROVE, True, ExtensionStatus.ACCEPTED, None, None),
        (
            TimeoutAction.AUTO_APPROVE,
            False,
            ExtensionStatus.TIMEOUT,
            FailureCause.EXTENSION_SAFEGUARD_TRIPPED,
            TimeoutReason.SAFEGUARD,
        ),
        (
            TimeoutAction.AUTO_REJECT,
            True,
            ExtensionStatus.TIMEOUT,
            FailureCause.EXTENSION_REJECTED,
            TimeoutReason.TIMEOUT,
        ),
    ],
)
def test_time_out_outcomes(
    action: TimeoutAction,
    reachable: bool,
    status: ExtensionStatus,
    cause: FailureCause | None,
    reason: TimeoutReason | None,
) -> None:
    facts = Facts(
        now=T0 + timedelta(seconds=10),
        timeout_action=action,
        mitra_connected=reachable,
        mitra_online=reachable,
    )
    decision = decide(_answer_snapshot(), TimeoutExtension("e1"), facts)
    assert decision.extension is not None
    row = decision.extension.row
    assert (row.status, row.via_timeout, row.failure_cause, row.reason) == (
        status,
        True,
        cause,
        reason,
    )


@pytest.mark.parametrize("host_status", [SessionStatus.ACTIVE, SessionStatus.CLOSING])
@pytest.mark.parametrize(
    ("action", "cause", "reason"),
    [
        (
            TimeoutAction.AUTO_APPROVE,
            FailureCause.EXTENSION_SAFEGUARD_TRIPPED,
            TimeoutReason.SAFEGUARD,
        ),
        (TimeoutAction.AUTO_REJECT, FailureCause.EXTENSION_REJECTED, TimeoutReason.TIMEOUT),
    ],
)
def test_time_out_under_a_session_the_host_moved_resolves_and_leaves_the_session(
    host_status: SessionStatus,
    action: TimeoutAction,
    cause: FailureCause,
    reason: TimeoutReason,
) -> None:
    """The host moved the session away from ``extending`` without ``end_session``:
    the extension still times out, uncharged (never approved, even with the mitra
    reachable), and the session is left as the host set it."""
    moved = replace(_answer_snapshot(), session=replace(SESSION, status=host_status))
    facts = Facts(
        now=T0 + timedelta(seconds=10),
        timeout_action=action,
        mitra_connected=True,
        mitra_online=True,
    )
    decision = decide(moved, TimeoutExtension("e1"), facts)
    assert decision.extension is not None and decision.payment is not None
    row = decision.extension.row
    assert (row.status, row.via_timeout, row.failure_cause, row.reason) == (
        ExtensionStatus.TIMEOUT,
        True,
        cause,
        reason,
    )
    assert decision.payment.row.status is PaymentStatus.FAILED
    assert decision.session is None and decision.ledger is None
    assert [r.entity for r in decision.log] == ["extension", "payment"]
    # the customer's extension_response and the host's payment event, nothing closing
    assert [type(e).__name__ for e in decision.effects] == ["Notify", "PaymentFailed"]
    early = replace(facts, now=T0 + timedelta(seconds=9))
    assert decide(moved, TimeoutExtension("e1"), early) is NOTHING  # still only when due


def test_time_out_before_the_deadline_or_after_resolution_changes_nothing() -> None:
    early = Facts(now=T0 + timedelta(seconds=9), mitra_connected=True, mitra_online=True)
    assert decide(_answer_snapshot(), TimeoutExtension("e1"), early) is NOTHING
    done = replace(_answer_snapshot(), extension=_pending(status=ExtensionStatus.ACCEPTED))
    assert decide(done, TimeoutExtension("e1"), Facts(now=T0 + timedelta(hours=1))).is_empty


def test_end_cancels_the_pending_extension_and_fails_its_payment() -> None:
    snapshot = Snapshot(session=EXTENDING, pending=_pending(), payment=PAYMENT)
    decision = decide(snapshot, EndSession("s1"), Facts(now=T0))
    assert decision.session is not None
    assert decision.session.row.status is SessionStatus.ENDED
    assert decision.extension is not None
    assert decision.extension.row.status is ExtensionStatus.REJECTED
    assert decision.extension.row.failure_cause is FailureCause.SESSION_ENDED
    assert decision.payment is not None
    assert decision.payment.row.failure_cause is FailureCause.SESSION_ENDED
    assert decision.ledger is None


def test_end_is_idempotent_and_needs_a_session() -> None:
    ended = replace(SESSION, status=SessionStatus.ENDED)
    assert decide(Snapshot(session=ended), EndSession("s1"), Facts(now=T0)).is_empty
    with pytest.raises(ExtensionError) as info:
        decide(Snapshot(session=None), EndSession("s1"), Facts(now=T0))
    assert info.value.code.value == "NOT_FOUND"
