"""The outcomes several events share: accepted and charged, closed unpaid,
cancelled under an ending session; and the row moves they are made of."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from .. import messages
from ..errors import ErrorCode, ExtensionError
from ..machine import EXTENSION_MACHINE, PAYMENT_MACHINE, SESSION_MACHINE, Guard, InvalidMove
from ..model import (
    ClearClosureGrace,
    Effect,
    Extension,
    ExtensionStatus,
    Facts,
    FailureCause,
    LedgerEntry,
    MessageType,
    Participant,
    PaymentConsumed,
    PaymentFailed,
    PaymentSession,
    PaymentStatus,
    Session,
    SessionExpiryExtended,
    SessionStatus,
    StartClosureGrace,
    TimeoutReason,
    TransactionType,
    TransitionRecord,
)
from .snapshot import Change, Decision, Snapshot

__all__ = ["EXPIRY_OUT_OF_RANGE", "accept", "cancel", "close", "extended_expiry", "move_session"]

EXPIRY_OUT_OF_RANGE = "Session expiry is out of range; it cannot be extended"


def extended_expiry(session: Session, now: datetime, minutes: int) -> datetime | None:
    """The session's expiry once ``minutes`` are bought (from now when it has
    passed: ``extending`` paused it), or ``None`` when that is past the last
    moment a timestamp can hold (an expiry the host set to PostgreSQL's
    ``infinity`` or near 9999-12-31): such a session cannot be extended."""
    try:
        return max(now, session.expires_at) + timedelta(minutes=minutes)
    except OverflowError:
        return None


def accept(
    s: Snapshot,
    ext: Extension,
    f: Facts,
    *,
    status: ExtensionStatus,
    via_timeout: bool,
    actor: str,
    event: str,
) -> Decision:
    """``ext`` accepted (``status``: where the extension machine moved it): the
    session resumes with the bought minutes, the payment is consumed."""
    session = s.session
    payment = _backing_payment(s, ext)
    assert session is not None
    if payment is None:
        # A request the old service left without a payment, or a payment row
        # the host deleted: nothing to charge, and the refusal says so.
        missing = not ext.payment_session_id  # NULL in the old service's rows
        raise ExtensionError(
            ErrorCode.INVALID_STATE,
            "Extension has no payment session" if missing else "Payment session not found",
        )
    now = f.now
    consumed = _move_payment(payment, "consume", now)
    if consumed is None:
        raise ExtensionError(ErrorCode.INVALID_STATE, "Payment session is no longer confirmed")
    # A session whose expiry passed while ``extending`` was paused, not closed.
    expires_at = extended_expiry(session, now, ext.duration_minutes)
    if expires_at is None:
        raise ExtensionError(ErrorCode.INVALID_STATE, EXPIRY_OUT_OF_RANGE)
    resolved = _resolve(ext, status, now, via_timeout=via_timeout)
    resumed = move_session(session, "resume", now, expires_at=expires_at, closure_deadline=None)
    ledger = LedgerEntry(
        customer_id=session.customer_id,
        session_id=session.id,
        extension_id=ext.id,
        type=TransactionType.EXTENSION,
        amount=ext.price,
        created_at=now,
    )
    effects: tuple[Effect, ...] = (
        ClearClosureGrace(session_id=session.id),
        SessionExpiryExtended(session_id=session.id, expires_at=expires_at),
        messages.accepted_response(session, ext, expires_at, via_timeout),
        messages.plain(session, ext, Participant.CUSTOMER, MessageType.SESSION_RESUMED),
        messages.plain(session, ext, Participant.MITRA, MessageType.SESSION_RESUMED),
        # The host's money side effects of the charge (the seed's consumePaymentSession).
        PaymentConsumed(
            session_id=session.id,
            extension_id=ext.id,
            payment_session_id=payment.id,
            customer_id=payment.customer_id,
            amount=payment.amount,
            duration_minutes=ext.duration_minutes,
            via_timeout=via_timeout,
            at=now,
        ),
    )
    log = (
        record(ext, resolved.status, event, actor, now),
        record(session, resumed.status, "resume", actor, now),
        record(payment, consumed.status, "consume", actor, now),
    )
    return Decision(
        extension=Change(str(ext.status), resolved),
        session=Change(str(session.status), resumed),
        payment=Change(str(payment.status), consumed),
        ledger=ledger,
        log=log,
        effects=effects,
        resolved=ext.id,
    )


def close(
    s: Snapshot,
    ext: Extension,
    f: Facts,
    *,
    status: ExtensionStatus,
    cause: FailureCause,
    reason: TimeoutReason | None = None,
    actor: str,
    event: str,
    close_session: bool = True,
) -> Decision:
    """``ext`` resolved unpaid as ``status`` (where the extension machine moved
    it), the payment failed for ``cause``; a timeout tells the customer its
    ``reason`` (none for an answer).  The session closes with a grace timer unless
    ``close_session`` is false (then only the customer hears of it, and no one
    when the host deleted the session row)."""
    session = s.session
    now = f.now
    unpaid = _unpaid(
        s, ext, now, status=status, cause=cause, reason=reason, actor=actor, event=event
    )
    if session is None:  # nobody to tell, but the host's money side still hears of it
        return unpaid
    response = (
        messages.rejected_response(session, ext)
        if reason is None
        else messages.timed_out_response(session, ext, reason)
    )
    if not close_session:
        return replace(unpaid, effects=(response, *unpaid.effects))
    deadline = now + timedelta(seconds=f.grace_seconds)
    closing = move_session(
        session, "close", now, expires_at=session.expires_at, closure_deadline=deadline
    )
    effects = (
        response,
        messages.plain(session, ext, Participant.MITRA, MessageType.SESSION_CLOSING),
        messages.plain(session, ext, Participant.CUSTOMER, MessageType.SESSION_CLOSING),
        StartClosureGrace(session_id=session.id, deadline=deadline),
        *unpaid.effects,
    )
    resolution, *payment_log = unpaid.log
    log = (resolution, record(session, closing.status, "close", actor, now), *payment_log)
    return replace(unpaid, session=Change(str(session.status), closing), log=log, effects=effects)


def cancel(s: Snapshot, ext: Extension, f: Facts, actor: str) -> Decision:
    """A pending extension under an ending session: rejected, payment failed, no charge."""
    status = EXTENSION_MACHINE.fire(ext.status, "cancel", Guard(now=f.now, deadline=ext.expires_at))
    unpaid = _unpaid(
        s,
        ext,
        f.now,
        status=status,
        cause=FailureCause.SESSION_ENDED,
        reason=None,
        actor=actor,
        event="cancel",
    )
    assert s.session is not None
    return replace(unpaid, effects=(messages.cancelled_response(s.session, ext), *unpaid.effects))


def _unpaid(
    s: Snapshot,
    ext: Extension,
    now: datetime,
    *,
    status: ExtensionStatus,
    cause: FailureCause,
    reason: TimeoutReason | None,
    actor: str,
    event: str,
) -> Decision:
    """What every uncharged resolution of ``ext`` holds: the extension resolved
    as ``status``, its backing payment failed for ``cause`` (when it is still
    confirmed) and the host's money side told; no participant's message yet."""
    resolved = _resolve(
        ext, status, now, via_timeout=reason is not None, reason=reason, cause=cause
    )
    payment = _backing_payment(s, ext)
    failed = _fail_payment(payment, cause, now)
    return Decision(
        extension=Change(str(ext.status), resolved),
        payment=failed,
        log=(
            record(ext, status, event, actor, now, cause),
            *_payment_log(payment, failed, actor, now),
        ),
        effects=_payment_failed(failed, ext, now),
        resolved=ext.id,
    )


def move_session(
    session: Session,
    trigger: str,
    now: datetime,
    *,
    expires_at: datetime,
    closure_deadline: datetime | None,
) -> Session:
    """``session`` moved by ``trigger``, with the expiry and closure deadline given."""
    try:
        status = SESSION_MACHINE.fire(session.status, trigger, Guard(now=now))
    except InvalidMove:
        raise ExtensionError(
            ErrorCode.INVALID_STATE,
            f"Session is {session.unknown_status or session.status.value}; it cannot {trigger}",
        ) from None
    return replace(
        session,
        status=status,
        expires_at=expires_at,
        closure_deadline=closure_deadline,
        unknown_status=None,
    )


def record(
    row: Extension | Session | PaymentSession,
    to: ExtensionStatus | SessionStatus | PaymentStatus,
    event: str,
    actor: str,
    now: datetime,
    cause: FailureCause | None = None,
) -> TransitionRecord:
    """The audit line of ``row`` (as it was) moving to ``to``."""
    return TransitionRecord(
        entity=_ENTITY[type(row)],
        entity_id=row.id,
        from_status=str(row.status),
        to_status=str(to),
        event=event,
        actor=actor,
        at=now,
        cause=str(cause) if cause else None,
    )


_ENTITY: dict[type, str] = {Extension: "extension", Session: "session", PaymentSession: "payment"}


def _resolve(
    ext: Extension,
    status: ExtensionStatus,
    now: datetime,
    *,
    via_timeout: bool = False,
    reason: TimeoutReason | None = None,
    cause: FailureCause | None = None,
) -> Extension:
    """``ext`` resolved as ``status`` at ``now`` (a copy: rows are immutable)."""
    return replace(
        ext,
        status=status,
        responded_at=now,
        via_timeout=via_timeout,
        reason=reason,
        failure_cause=cause,
        # the resolution says why; texts the host had left there are replaced
        unknown_reason=None,
        unknown_failure_cause=None,
    )


def _backing_payment(s: Snapshot, ext: Extension) -> PaymentSession | None:
    """The snapshot's payment when it is the one backing ``ext``."""
    return s.payment if s.payment and s.payment.id == ext.payment_session_id else None


def _fail_payment(
    payment: PaymentSession | None, cause: FailureCause, now: datetime
) -> Change[PaymentSession] | None:
    """``payment`` failed for ``cause``; none when the payment machine has no
    such move from its status (only a confirmed payment is failed)."""
    failed = _move_payment(payment, "fail", now)
    if payment is None or failed is None:
        return None
    return Change(str(payment.status), replace(failed, failure_cause=cause))


def _move_payment(
    payment: PaymentSession | None, trigger: str, now: datetime
) -> PaymentSession | None:
    """``payment`` moved by the payment machine's ``trigger``; none when it has
    no such move (no payment, or not ``confirmed``)."""
    if payment is None:
        return None
    try:
        status = PAYMENT_MACHINE.fire(payment.status, trigger, Guard(now=now))
    except InvalidMove:
        return None
    return replace(payment, status=status, unknown_status=None)


def _payment_failed(
    change: Change[PaymentSession] | None, ext: Extension, now: datetime
) -> tuple[Effect, ...]:
    """The host's event for a payment this decision fails (the seed's
    ``failPaymentSession`` and its failed-pairings audit row, tagged by cause)."""
    if change is None:
        return ()
    row = change.row
    assert row.failure_cause is not None
    return (
        PaymentFailed(
            session_id=ext.session_id,
            extension_id=ext.id,
            payment_session_id=row.id,
            customer_id=row.customer_id,
            amount=row.amount,
            cause=row.failure_cause,
            at=now,
        ),
    )


def _payment_log(
    payment: PaymentSession | None,
    change: Change[PaymentSession] | None,
    actor: str,
    now: datetime,
) -> tuple[TransitionRecord, ...]:
    """The audit line of ``payment`` failed by ``change`` (none when nothing changed)."""
    if payment is None or change is None:
        return ()
    return (record(payment, change.row.status, "fail", actor, now, change.row.failure_cause),)
