"""The pure core: ``decide(snapshot, event, facts) -> Decision``.

No I/O, no clock, no globals.  The shell loads a :class:`Snapshot`, passes
the event and the :class:`~extension_fsm.model.Facts` it gathered (time,
config, presence, a fresh id), and gets back the rows to write (each with the
status it must still have: compare-and-set), the ledger entry, the audit log
and the effects to deliver after commit.  Every status move goes through the
machines of :mod:`extension_fsm.machine`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Generic, TypeVar

from . import messages
from ._construct import builder, fast_init
from .errors import ErrorCode, ExtensionError
from .machine import EXTENSION_MACHINE, SESSION_MACHINE, Guard, InvalidMove
from .model import (
    ACTOR_CUSTOMER,
    ACTOR_HOST,
    ACTOR_MITRA,
    ACTOR_SYSTEM,
    ClearClosureGrace,
    Effect,
    EndSession,
    Event,
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
    RequestExtension,
    RespondToExtension,
    Session,
    SessionExpiryExtended,
    SessionStatus,
    StartClosureGrace,
    TimeoutAction,
    TimeoutExtension,
    TimeoutReason,
    TransactionType,
    TransitionRecord,
)

__all__ = [
    "MAX_DURATION_MINUTES",
    "MIN_DURATION_MINUTES",
    "Change",
    "Decision",
    "Snapshot",
    "Undecidable",
    "decide",
]

MIN_DURATION_MINUTES = 1
MAX_DURATION_MINUTES = 1440

R = TypeVar("R")


@fast_init
@dataclass(frozen=True, slots=True)
class Snapshot:
    """The rows an event is decided on, as loaded in one unit of work.

    ``extension`` is the extension the event names (respond, timeout);
    ``pending`` is the session's pending extension (request, end);
    ``payment_live`` a pending or accepted extension the payment already backs;
    ``now`` the store's own clock when it has one (PostgreSQL), read with these
    rows: deadlines are then judged by it rather than by each worker's clock.
    """

    session: Session | None
    extension: Extension | None = None
    payment: PaymentSession | None = None
    pending: Extension | None = None
    payment_live: Extension | None = None
    now: datetime | None = None


@dataclass(frozen=True, slots=True)
class Undecidable:
    """A due extension whose rows could not even be read into a snapshot (what
    the host wrote does not parse): the sweep sets it aside instead of deciding."""

    extension_id: str
    error: str


@fast_init
@dataclass(frozen=True, slots=True)
class Change(Generic[R]):
    """Write ``row`` only where the stored status is still ``expected`` (``None``: insert)."""

    expected: str | None
    row: R


@fast_init
@dataclass(frozen=True, slots=True)
class Decision:
    """Everything one event changes; an empty decision changes nothing."""

    extension: Change[Extension] | None = None
    session: Change[Session] | None = None
    payment: Change[PaymentSession] | None = None
    ledger: LedgerEntry | None = None
    log: tuple[TransitionRecord, ...] = ()
    effects: tuple[Effect, ...] = ()
    #: when set, the shell arms an in-process timer for this extension at this time
    timer: tuple[str, datetime] | None = None
    #: the extension whose in-process timer can be dropped
    resolved: str | None = None

    @property
    def is_empty(self) -> bool:
        """True when nothing is to be written."""
        return self.extension is None and self.session is None and self.payment is None


NOTHING = Decision()

# Every field, positionally: the fast constructors (see ``_construct``).
_change = builder(Change)
_decision = builder(Decision)
_record = builder(TransitionRecord)
_extension = builder(Extension)
_session = builder(Session)
_payment = builder(PaymentSession)
_guard = builder(Guard)
_ledger = builder(LedgerEntry)
_clear_grace = builder(ClearClosureGrace)
_start_grace = builder(StartClosureGrace)
_expiry_extended = builder(SessionExpiryExtended)
_APPROVE = TimeoutAction.AUTO_APPROVE

# The enum members the decisions read, as plain class attributes: in Python 3.11
# ``SessionStatus.ENDED`` is a lookup through ``EnumType.__getattr__`` (~70 ns, and
# a decision reads a dozen).  Same members, so ``is`` and ``==`` hold as before.


class _S:
    ACTIVE, CLOSING, ENDED = SessionStatus.ACTIVE, SessionStatus.CLOSING, SessionStatus.ENDED
    EXTENDING, UNKNOWN = SessionStatus.EXTENDING, SessionStatus.UNKNOWN


class _E:
    PENDING, ACCEPTED = ExtensionStatus.PENDING, ExtensionStatus.ACCEPTED
    REJECTED, TIMEOUT = ExtensionStatus.REJECTED, ExtensionStatus.TIMEOUT


class _P:
    CONFIRMED, CONSUMED, FAILED = (
        PaymentStatus.CONFIRMED,
        PaymentStatus.CONSUMED,
        PaymentStatus.FAILED,
    )


class _To:
    CUSTOMER, MITRA = Participant.CUSTOMER, Participant.MITRA


class _Msg:
    SESSION_RESUMED, SESSION_CLOSING = MessageType.SESSION_RESUMED, MessageType.SESSION_CLOSING


class _Cause:
    EXTENSION_REJECTED = FailureCause.EXTENSION_REJECTED
    EXTENSION_SAFEGUARD_TRIPPED = FailureCause.EXTENSION_SAFEGUARD_TRIPPED
    SESSION_ENDED = FailureCause.SESSION_ENDED


class _Reason:
    TIMEOUT, SAFEGUARD = TimeoutReason.TIMEOUT, TimeoutReason.SAFEGUARD


_CHARGE = TransactionType.EXTENSION


def decide(snapshot: Snapshot, event: Event, facts: Facts) -> Decision:
    """Decide ``event`` on ``snapshot`` given ``facts``; raise ExtensionError to refuse."""
    match event:
        case RequestExtension():
            return _request(snapshot, event, facts)
        case RespondToExtension():
            return _respond(snapshot, event, facts)
        case TimeoutExtension():
            return _timeout(snapshot, facts)
        case EndSession():
            return _end(snapshot, facts)
    raise TypeError(f"unknown event {event!r}")  # pragma: no cover


# ----------------------------------------------------------------------- request


def _request(s: Snapshot, e: RequestExtension, f: Facts) -> Decision:
    session = s.session
    if (
        session is None
        or session.customer_id != e.customer_id
        or session.status not in (_S.ACTIVE, _S.CLOSING)
    ):
        raise ExtensionError(ErrorCode.SESSION_NOT_ACTIVE, "Session not found or already ended")
    if not e.payment_session_id:
        raise ExtensionError(ErrorCode.VALIDATION_ERROR, "extension_payment_session_id is required")
    payment = s.payment
    if payment is None:
        raise ExtensionError(ErrorCode.NOT_FOUND, "Payment session not found")
    if payment.customer_id != e.customer_id:
        raise ExtensionError(
            ErrorCode.FORBIDDEN, "Payment session does not belong to this customer"
        )
    if payment.status is not _P.CONFIRMED:
        raise ExtensionError(
            ErrorCode.INVALID_STATE,
            f"Payment session is {payment.unknown_status or payment.status.value},"
            " must be confirmed",
        )
    if not payment.is_extension:
        raise ExtensionError(
            ErrorCode.INVALID_STATE, "Payment session is not flagged as an extension payment"
        )
    if payment.is_first_session_discount:
        raise ExtensionError(
            ErrorCode.FIRST_SESSION_DISCOUNT_NOT_ALLOWED,
            "First-session discount is not available for extensions",
        )
    duration = _whole_number(e.duration_minutes, "duration_minutes")
    if not MIN_DURATION_MINUTES <= duration <= MAX_DURATION_MINUTES:
        raise ExtensionError(
            ErrorCode.VALIDATION_ERROR,
            f"duration_minutes must be between {MIN_DURATION_MINUTES} and {MAX_DURATION_MINUTES}",
        )
    price = _whole_number(e.price, "price")
    if price != payment.amount:
        # The seed took the price on trust; the payment session is what was paid.
        raise ExtensionError(
            ErrorCode.VALIDATION_ERROR,
            f"price {price} does not match the payment session amount {payment.amount}",
        )
    if s.pending is not None:
        raise ExtensionError(ErrorCode.EXTENSION_PENDING, "An extension request is already pending")
    if s.payment_live is not None:
        raise ExtensionError(
            ErrorCode.PAYMENT_IN_USE, "Payment session already backs another extension"
        )

    now = f.now
    before = str(session.status)
    paused = _move_session(session, "pause", now, session.expires_at, session.closure_deadline)
    expires_at = now + timedelta(0, f.timeout_seconds)  # (days, seconds): no keyword parsing
    # id, session, duration, price, payment, status, requested, expires, timeout, then
    # responded_at, via_timeout, reason, failure_cause
    extension = _extension(
        f.new_extension_id,
        session.id,
        duration,
        price,
        payment.id,
        _E.PENDING,
        now,
        expires_at,
        f.timeout_seconds,
        None,
        False,
        None,
        None,
    )
    effects = (
        messages.extension_request(session, extension),
        messages.session_paused(session, extension),
    )
    log = (
        _record(
            "extension", extension.id, None, str(_E.PENDING), "request", ACTOR_CUSTOMER, now, None
        ),
        _record(
            "session", session.id, before, str(paused.status), "pause", ACTOR_CUSTOMER, now, None
        ),
    )
    return _decision(
        _change(None, extension),
        _change(before, paused),
        None,
        None,
        log,
        effects,
        (extension.id, expires_at),
        None,
    )


def _whole_number(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ExtensionError(ErrorCode.VALIDATION_ERROR, f"{name} must be a whole number")
    if value <= 0:
        raise ExtensionError(ErrorCode.VALIDATION_ERROR, f"{name} must be positive")
    return value


# ----------------------------------------------------------------------- respond


_NOT_PENDING = "Extension not found or already resolved"


def _respond(s: Snapshot, e: RespondToExtension, f: Facts) -> Decision:
    session = s.session
    if session is None or session.id != e.session_id or session.mitra_id != e.mitra_id:
        raise ExtensionError(ErrorCode.FORBIDDEN, "Session not found")
    ext = s.extension
    if ext is None or ext.session_id != session.id:
        # Seed: one compare-and-set found nothing, whether the id is unknown,
        # of another session or resolved: one code, one text (clients key on it).
        raise ExtensionError(ErrorCode.EXTENSION_RESOLVED, _NOT_PENDING)
    trigger = "accept" if e.accepted else "reject"
    try:
        EXTENSION_MACHINE.fire(
            ext.status, trigger, _guard(f.now, ext.expires_at, _APPROVE, False, False)
        )
    except InvalidMove as move:
        message = "The answer window has passed" if move.guarded else _NOT_PENDING
        raise ExtensionError(ErrorCode.EXTENSION_RESOLVED, message) from None
    if session.status is _S.ENDED:
        raise ExtensionError(ErrorCode.SESSION_NOT_ACTIVE, "Session already ended")
    if session.status is _S.UNKNOWN:  # the host moved it somewhere this library does not know
        raise ExtensionError(ErrorCode.SESSION_NOT_ACTIVE, "Session is not active")
    if e.accepted:
        return _accept(s, ext, f, False, ACTOR_MITRA, "accept")
    return _close(
        s,
        ext,
        f,
        _E.REJECTED,
        _Cause.EXTENSION_REJECTED,
        None,
        ACTOR_MITRA,
        "reject",
    )


# ----------------------------------------------------------------------- timeout


def _timeout(s: Snapshot, f: Facts) -> Decision:
    ext = s.extension
    session = s.session
    if ext is None or ext.status is not _E.PENDING:
        return NOTHING  # resolved first by an answer, another worker or the session's end
    if session is not None and session.status is _S.ENDED:
        return _cancel(s, ext, f, ACTOR_SYSTEM)
    # A payment the host moved away from ``confirmed`` (or to a status this
    # library does not know), a session it moved away from ``extending`` or
    # deleted: nothing can be charged; the extension still times out, uncharged,
    # rather than stay pending for ever.
    chargeable = (
        session is not None
        and s.payment is not None
        and s.payment.status is _P.CONFIRMED
        and session.status is _S.EXTENDING
    )
    guard = _guard(
        f.now, ext.expires_at, f.timeout_action, f.mitra_connected and chargeable, f.mitra_online
    )
    try:
        outcome = EXTENSION_MACHINE.fire(ext.status, "time_out", guard)
    except InvalidMove:
        return NOTHING  # not due yet
    if outcome is _E.ACCEPTED:
        return _accept(s, ext, f, True, ACTOR_SYSTEM, "time_out")
    # Seed: auto_approve whose safeguard tripped is tagged apart from a configured reject.
    tripped = f.timeout_action is _APPROVE
    return _close(
        s,
        ext,
        f,
        _E.TIMEOUT,
        _Cause.EXTENSION_SAFEGUARD_TRIPPED if tripped else _Cause.EXTENSION_REJECTED,
        _Reason.SAFEGUARD if tripped else _Reason.TIMEOUT,
        ACTOR_SYSTEM,
        "time_out",
        # The host moved the session away from ``extending`` (not through
        # ``end_session``): the extension still times out, uncharged, and the
        # session stays as the host set it, so nothing is left pending for ever.
        close_session=session is not None and session.status is _S.EXTENDING,
    )


# --------------------------------------------------------------------------- end


def _end(s: Snapshot, f: Facts) -> Decision:
    session = s.session
    if session is None:
        raise ExtensionError(ErrorCode.NOT_FOUND, "Session not found")
    if session.status is _S.ENDED:
        return NOTHING  # ending is idempotent; ``ended`` is final
    cancelled = _cancel(s, s.pending, f, ACTOR_HOST) if s.pending else NOTHING
    ended = _move_session(session, "end", f.now, session.expires_at, None)
    before = str(session.status)
    end = _record("session", session.id, before, str(ended.status), "end", ACTOR_HOST, f.now, None)
    return _decision(
        cancelled.extension,
        _change(before, ended),
        cancelled.payment,
        cancelled.ledger,
        (*cancelled.log, end),
        cancelled.effects,
        cancelled.timer,
        cancelled.resolved,
    )


def _cancel(s: Snapshot, ext: Extension, f: Facts, actor: str) -> Decision:
    """A pending extension under an ending session: rejected, payment failed, no charge."""
    now = f.now
    cause = _Cause.SESSION_ENDED
    status = EXTENSION_MACHINE.fire(
        ext.status, "cancel", _guard(now, ext.expires_at, _APPROVE, False, False)
    )
    resolved = _resolve(ext, status, now, False, None, cause)
    payment = s.payment if s.payment and s.payment.id == ext.payment_session_id else None
    failed = _fail_payment(payment, cause)
    session = s.session
    assert session is not None
    before = str(ext.status)
    log = (
        _record("extension", ext.id, before, str(status), "cancel", actor, now, str(cause)),
        *_payment_log(failed, "fail", actor, now),
    )
    effects: tuple[Effect, ...] = (
        messages.cancelled_response(session, ext),
        *_payment_failed(failed, ext, now),
    )
    return _decision(_change(before, resolved), None, failed, None, log, effects, None, ext.id)


# ----------------------------------------------------------------- the outcomes


def _accept(
    s: Snapshot, ext: Extension, f: Facts, via_timeout: bool, actor: str, event: str
) -> Decision:
    session = s.session
    payment = s.payment
    assert session is not None
    if payment is None or payment.status is not _P.CONFIRMED:
        raise ExtensionError(ErrorCode.INVALID_STATE, "Payment session is no longer confirmed")
    now = f.now
    accepted = _E.ACCEPTED
    resolved = _resolve(ext, accepted, now, via_timeout, None, None)
    # A session whose expiry passed while ``extending`` was paused, not closed.
    base = now if now > session.expires_at else session.expires_at  # max(), without the call
    # (days, seconds, microseconds, milliseconds, minutes): no keyword parsing
    expires_at = base + timedelta(0, 0, 0, 0, ext.duration_minutes)
    resumed = _move_session(session, "resume", now, expires_at, None)
    consumed = _payment(
        payment.id,
        payment.customer_id,
        _P.CONSUMED,
        payment.amount,
        payment.is_extension,
        payment.is_first_session_discount,
        payment.failure_cause,
        None,
    )
    sid = session.id
    ledger = _ledger(session.customer_id, sid, ext.id, _CHARGE, ext.price, now)
    effects: tuple[Effect, ...] = (
        _clear_grace(sid),
        _expiry_extended(sid, expires_at),
        messages.accepted_response(session, ext, expires_at, via_timeout),
        messages.plain(session, ext, _To.CUSTOMER, _Msg.SESSION_RESUMED),
        messages.plain(session, ext, _To.MITRA, _Msg.SESSION_RESUMED),
        # The host's money side effects of the charge (the seed's consumePaymentSession).
        PaymentConsumed(
            sid,
            ext.id,
            payment.id,
            payment.customer_id,
            payment.amount,
            ext.duration_minutes,
            via_timeout,
            now,
        ),
    )
    ext_was, session_was, payment_was = str(ext.status), str(session.status), str(payment.status)
    log = (
        _record("extension", ext.id, ext_was, str(accepted), event, actor, now, None),
        _record("session", sid, session_was, str(resumed.status), "resume", actor, now, None),
        _record(
            "payment",
            payment.id,
            payment_was,
            str(_P.CONSUMED),
            "consume",
            actor,
            now,
            None,
        ),
    )
    return _decision(
        _change(ext_was, resolved),
        _change(session_was, resumed),
        _change(payment_was, consumed),
        ledger,
        log,
        effects,
        None,
        ext.id,
    )


def _close(
    s: Snapshot,
    ext: Extension,
    f: Facts,
    status: ExtensionStatus,
    cause: FailureCause,
    reason: TimeoutReason | None,
    actor: str,
    event: str,
    *,
    close_session: bool = True,
) -> Decision:
    """``ext`` resolved unpaid; the session closes with a grace timer unless
    ``close_session`` is false (then only the customer hears of it, and no one
    when the host deleted the session row)."""
    session = s.session
    now = f.now
    resolved = _resolve(ext, status, now, reason is not None, reason, cause)
    payment = s.payment if s.payment and s.payment.id == ext.payment_session_id else None
    failed = _fail_payment(payment, cause)
    ext_was = str(ext.status)
    resolution = _record("extension", ext.id, ext_was, str(status), event, actor, now, str(cause))
    if session is None:  # nobody to tell, but the host's money side still hears of it
        log = (resolution, *_payment_log(failed, "fail", actor, now))
        events = _payment_failed(failed, ext, now)
        return _decision(_change(ext_was, resolved), None, failed, None, log, events, None, ext.id)
    response = (
        messages.rejected_response(session, ext)
        if reason is None
        else messages.timed_out_response(session, ext, reason)
    )
    if not close_session:
        log = (resolution, *_payment_log(failed, "fail", actor, now))
        effects: tuple[Effect, ...] = (response, *_payment_failed(failed, ext, now))
        return _decision(_change(ext_was, resolved), None, failed, None, log, effects, None, ext.id)
    deadline = now + timedelta(0, f.grace_seconds)  # (days, seconds)
    closing = _move_session(session, "close", now, session.expires_at, deadline)
    effects = (
        response,
        messages.plain(session, ext, _To.MITRA, _Msg.SESSION_CLOSING),
        messages.plain(session, ext, _To.CUSTOMER, _Msg.SESSION_CLOSING),
        _start_grace(session.id, deadline),
        *_payment_failed(failed, ext, now),
    )
    session_was = str(session.status)
    log = (
        resolution,
        _record("session", session.id, session_was, str(closing.status), "close", actor, now, None),
        *_payment_log(failed, "fail", actor, now),
    )
    return _decision(
        _change(ext_was, resolved),
        _change(session_was, closing),
        failed,
        None,
        log,
        effects,
        None,
        ext.id,
    )


# ----------------------------------------------------------------------- helpers


def _resolve(
    ext: Extension,
    status: ExtensionStatus,
    now: datetime,
    via_timeout: bool,
    reason: TimeoutReason | None,
    cause: FailureCause | None,
) -> Extension:
    """``ext`` resolved as ``status`` at ``now`` (a copy: rows are immutable)."""
    return _extension(
        ext.id,
        ext.session_id,
        ext.duration_minutes,
        ext.price,
        ext.payment_session_id,
        status,
        ext.requested_at,
        ext.expires_at,
        ext.timeout_seconds,
        now,
        via_timeout,
        reason,
        cause,
    )


def _move_session(
    session: Session,
    trigger: str,
    now: datetime,
    expires_at: datetime,
    closure_deadline: datetime | None,
) -> Session:
    """``session`` moved by ``trigger``, with the expiry and closure deadline given."""
    try:
        status = SESSION_MACHINE.fire(
            session.status, trigger, _guard(now, None, _APPROVE, False, False)
        )
    except InvalidMove:
        raise ExtensionError(
            ErrorCode.INVALID_STATE,
            f"Session is {session.unknown_status or session.status.value}; it cannot {trigger}",
        ) from None
    return _session(
        session.id,
        session.customer_id,
        session.mitra_id,
        status,
        expires_at,
        session.customer_display_name,
        session.topic_sensitivity,
        closure_deadline,
        None,
    )


def _fail_payment(
    payment: PaymentSession | None, cause: FailureCause
) -> Change[PaymentSession] | None:
    if payment is None or payment.status is not _P.CONFIRMED:
        return None
    failed = _payment(
        payment.id,
        payment.customer_id,
        _P.FAILED,
        payment.amount,
        payment.is_extension,
        payment.is_first_session_discount,
        cause,
        None,
    )
    return _change(str(payment.status), failed)


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
            ext.session_id, ext.id, row.id, row.customer_id, row.amount, row.failure_cause, now
        ),
    )


def _payment_log(
    change: Change[PaymentSession] | None, event: str, actor: str, now: datetime
) -> tuple[TransitionRecord, ...]:
    if change is None:
        return ()
    row = change.row
    cause = str(row.failure_cause) if row.failure_cause else None
    return (_record("payment", row.id, change.expected, str(row.status), event, actor, now, cause),)
