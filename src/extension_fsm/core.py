"""The pure core: ``decide(snapshot, event, facts) -> Decision``.

No I/O, no clock, no globals.  The shell loads a :class:`Snapshot`, passes
the event and the :class:`~extension_fsm.model.Facts` it gathered (time,
config, presence, a fresh id), and gets back the rows to write (each with the
status it must still have: compare-and-set), the ledger entry, the audit log
and the effects to deliver after commit.  Every status move goes through the
machines of :mod:`extension_fsm.machine`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

from . import messages
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
    "decide",
]

MIN_DURATION_MINUTES = 1
MAX_DURATION_MINUTES = 1440

R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The rows an event is decided on, as loaded in one unit of work.

    ``extension`` is the extension the event names (respond, timeout);
    ``pending`` is the session's pending extension (request, end);
    ``payment_live`` a pending or accepted extension the payment already backs.
    """

    session: Session | None
    extension: Extension | None = None
    payment: PaymentSession | None = None
    pending: Extension | None = None
    payment_live: Extension | None = None


@dataclass(frozen=True, slots=True)
class Change(Generic[R]):
    """Write ``row`` only where the stored status is still ``expected`` (``None``: insert)."""

    expected: str | None
    row: R


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
        or session.status not in (SessionStatus.ACTIVE, SessionStatus.CLOSING)
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
    if payment.status is not PaymentStatus.CONFIRMED:
        raise ExtensionError(
            ErrorCode.INVALID_STATE,
            f"Payment session is {payment.status.value}, must be confirmed",
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

    guard = Guard(now=f.now)
    paused = _move_session(session, "pause", guard)
    extension = Extension(
        id=f.new_extension_id,
        session_id=session.id,
        duration_minutes=duration,
        price=price,
        payment_session_id=payment.id,
        status=ExtensionStatus.PENDING,
        requested_at=f.now,
        expires_at=f.now + timedelta(seconds=f.timeout_seconds),
        timeout_seconds=f.timeout_seconds,
    )
    effects = (
        messages.extension_request(session, extension),
        messages.session_paused(session, extension),
    )
    return Decision(
        extension=Change(None, extension),
        session=Change(str(session.status), paused),
        log=(
            _record(
                "extension", extension.id, None, extension.status, "request", ACTOR_CUSTOMER, f
            ),
            _record(
                "session", session.id, session.status, paused.status, "pause", ACTOR_CUSTOMER, f
            ),
        ),
        effects=effects,
        timer=(extension.id, extension.expires_at),
    )


def _whole_number(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ExtensionError(ErrorCode.VALIDATION_ERROR, f"{name} must be a whole number")
    if value <= 0:
        raise ExtensionError(ErrorCode.VALIDATION_ERROR, f"{name} must be positive")
    return value


# ----------------------------------------------------------------------- respond


def _respond(s: Snapshot, e: RespondToExtension, f: Facts) -> Decision:
    session = s.session
    if session is None or session.id != e.session_id or session.mitra_id != e.mitra_id:
        raise ExtensionError(ErrorCode.FORBIDDEN, "Session not found")
    ext = s.extension
    if ext is None or ext.session_id != session.id:
        raise ExtensionError(ErrorCode.NOT_FOUND, "Extension not found in this session")
    trigger = "accept" if e.accepted else "reject"
    try:
        EXTENSION_MACHINE.fire(ext.status, trigger, Guard(now=f.now, deadline=ext.expires_at))
    except InvalidMove as move:
        message = "The answer window has passed" if move.guarded else "Extension already resolved"
        raise ExtensionError(ErrorCode.EXTENSION_RESOLVED, message) from None
    if session.status is SessionStatus.ENDED:
        raise ExtensionError(ErrorCode.SESSION_NOT_ACTIVE, "Session already ended")
    if e.accepted:
        return _accept(s, ext, f, via_timeout=False, actor=ACTOR_MITRA, event="accept")
    return _close(
        s,
        ext,
        f,
        status=ExtensionStatus.REJECTED,
        cause=FailureCause.EXTENSION_REJECTED,
        reason=None,
        actor=ACTOR_MITRA,
        event="reject",
    )


# ----------------------------------------------------------------------- timeout


def _timeout(s: Snapshot, f: Facts) -> Decision:
    ext = s.extension
    session = s.session
    if ext is None or ext.status is not ExtensionStatus.PENDING or session is None:
        return NOTHING  # resolved first by an answer, another worker or the session's end
    if session.status is SessionStatus.ENDED:
        return _cancel(s, ext, f, actor=ACTOR_SYSTEM)
    # A payment the host moved away from ``confirmed`` cannot be charged: the
    # safeguard trips rather than leave the extension pending for ever.
    chargeable = s.payment is not None and s.payment.status is PaymentStatus.CONFIRMED
    guard = Guard(
        now=f.now,
        deadline=ext.expires_at,
        timeout_action=f.timeout_action,
        mitra_connected=f.mitra_connected and chargeable,
        mitra_online=f.mitra_online,
    )
    try:
        outcome = EXTENSION_MACHINE.fire(ext.status, "time_out", guard)
    except InvalidMove:
        return NOTHING  # not due yet
    if outcome is ExtensionStatus.ACCEPTED:
        return _accept(s, ext, f, via_timeout=True, actor=ACTOR_SYSTEM, event="time_out")
    # Seed: auto_approve whose safeguard tripped is tagged apart from a configured reject.
    tripped = f.timeout_action is TimeoutAction.AUTO_APPROVE
    return _close(
        s,
        ext,
        f,
        status=ExtensionStatus.TIMEOUT,
        cause=(
            FailureCause.EXTENSION_SAFEGUARD_TRIPPED if tripped else FailureCause.EXTENSION_REJECTED
        ),
        reason=TimeoutReason.SAFEGUARD if tripped else TimeoutReason.TIMEOUT,
        actor=ACTOR_SYSTEM,
        event="time_out",
    )


# --------------------------------------------------------------------------- end


def _end(s: Snapshot, f: Facts) -> Decision:
    session = s.session
    if session is None:
        raise ExtensionError(ErrorCode.NOT_FOUND, "Session not found")
    if session.status is SessionStatus.ENDED:
        return NOTHING  # ending is idempotent; ``ended`` is final
    cancelled = _cancel(s, s.pending, f, actor=ACTOR_HOST) if s.pending else NOTHING
    ended = _move_session(session, "end", Guard(now=f.now), closure_deadline=None)
    return replace(
        cancelled,
        session=Change(str(session.status), ended),
        log=(
            *cancelled.log,
            _record("session", session.id, session.status, ended.status, "end", ACTOR_HOST, f),
        ),
    )


def _cancel(s: Snapshot, ext: Extension, f: Facts, *, actor: str) -> Decision:
    """A pending extension under an ending session: rejected, payment failed, no charge."""
    resolved = _resolve(ext, "cancel", f, cause=FailureCause.SESSION_ENDED)
    payment = s.payment if s.payment and s.payment.id == ext.payment_session_id else None
    failed = _fail_payment(payment, FailureCause.SESSION_ENDED)
    session = s.session
    assert session is not None
    effects: tuple[Effect, ...] = (messages.cancelled_response(session, ext),)
    return Decision(
        extension=Change(str(ext.status), resolved),
        payment=failed,
        log=(
            _record(
                "extension",
                ext.id,
                ext.status,
                resolved.status,
                "cancel",
                actor,
                f,
                FailureCause.SESSION_ENDED,
            ),
            *_payment_log(failed, "fail", actor, f),
        ),
        effects=effects,
        resolved=ext.id,
    )


# ----------------------------------------------------------------- the outcomes


def _accept(
    s: Snapshot, ext: Extension, f: Facts, *, via_timeout: bool, actor: str, event: str
) -> Decision:
    session = s.session
    payment = s.payment
    assert session is not None
    if payment is None or payment.status is not PaymentStatus.CONFIRMED:
        raise ExtensionError(ErrorCode.INVALID_STATE, "Payment session is no longer confirmed")
    resolved = _resolve(ext, event, f, status=ExtensionStatus.ACCEPTED, via_timeout=via_timeout)
    # A session whose expiry passed while ``extending`` was paused, not closed.
    expires_at = max(session.expires_at, f.now) + timedelta(minutes=ext.duration_minutes)
    resumed = _move_session(
        session, "resume", Guard(now=f.now), expires_at=expires_at, closure_deadline=None
    )
    consumed = _evolve(payment, status=PaymentStatus.CONSUMED)
    ledger = LedgerEntry(
        customer_id=session.customer_id,
        session_id=session.id,
        extension_id=ext.id,
        type=TransactionType.EXTENSION,
        amount=ext.price,
        created_at=f.now,
    )
    effects: tuple[Effect, ...] = (
        ClearClosureGrace(session.id),
        SessionExpiryExtended(session.id, expires_at),
        messages.accepted_response(session, ext, expires_at=expires_at, via_timeout=via_timeout),
        messages.plain(session, ext, Participant.CUSTOMER, MessageType.SESSION_RESUMED),
        messages.plain(session, ext, Participant.MITRA, MessageType.SESSION_RESUMED),
    )
    return Decision(
        extension=Change(str(ext.status), resolved),
        session=Change(str(session.status), resumed),
        payment=Change(str(payment.status), consumed),
        ledger=ledger,
        log=(
            _record("extension", ext.id, ext.status, resolved.status, event, actor, f),
            _record("session", session.id, session.status, resumed.status, "resume", actor, f),
            _record("payment", payment.id, payment.status, consumed.status, "consume", actor, f),
        ),
        effects=effects,
        resolved=ext.id,
    )


def _close(
    s: Snapshot,
    ext: Extension,
    f: Facts,
    *,
    status: ExtensionStatus,
    cause: FailureCause,
    reason: TimeoutReason | None,
    actor: str,
    event: str,
) -> Decision:
    session = s.session
    assert session is not None
    resolved = _resolve(
        ext, event, f, status=status, via_timeout=reason is not None, reason=reason, cause=cause
    )
    deadline = f.now + timedelta(seconds=f.grace_seconds)
    closing = _move_session(session, "close", Guard(now=f.now), closure_deadline=deadline)
    failed = _fail_payment(s.payment, cause)
    response = (
        messages.rejected_response(session, ext)
        if reason is None
        else messages.timed_out_response(session, ext, reason)
    )
    effects: tuple[Effect, ...] = (
        response,
        messages.plain(session, ext, Participant.MITRA, MessageType.SESSION_CLOSING),
        messages.plain(session, ext, Participant.CUSTOMER, MessageType.SESSION_CLOSING),
        StartClosureGrace(session.id, deadline),
    )
    return Decision(
        extension=Change(str(ext.status), resolved),
        session=Change(str(session.status), closing),
        payment=failed,
        log=(
            _record("extension", ext.id, ext.status, resolved.status, event, actor, f, cause),
            _record("session", session.id, session.status, closing.status, "close", actor, f),
            *_payment_log(failed, "fail", actor, f),
        ),
        effects=effects,
        resolved=ext.id,
    )


# ----------------------------------------------------------------------- helpers

_FIELD_NAMES: dict[type, tuple[str, ...] | None] = {}


def _evolve(row: R, **changes: Any) -> R:
    """``dataclasses.replace`` for the frozen rows, minus its per-call introspection.

    A row's ``__init__`` only stores its fields (no ``__post_init__``, every
    field an init field: checked once per class, else plain ``replace``), so
    copying the fields onto a new instance builds the same row, twice as fast.
    """
    cls = type(row)
    names = _FIELD_NAMES.get(cls, ())
    if names == ():
        fields = dataclasses.fields(cls)  # type: ignore[arg-type]
        plain = not hasattr(cls, "__post_init__") and all(f.init for f in fields)
        names = _FIELD_NAMES[cls] = tuple(f.name for f in fields) if plain else None
    if names is None:
        return replace(row, **changes)  # type: ignore[type-var]
    new = object.__new__(cls)
    for name in names:
        object.__setattr__(new, name, changes[name] if name in changes else getattr(row, name))
    return new


def _resolve(
    ext: Extension,
    trigger: str,
    f: Facts,
    *,
    status: ExtensionStatus | None = None,
    via_timeout: bool = False,
    reason: TimeoutReason | None = None,
    cause: FailureCause | None = None,
) -> Extension:
    if status is None:
        status = EXTENSION_MACHINE.fire(
            ext.status, trigger, Guard(now=f.now, deadline=ext.expires_at)
        )
    return _evolve(
        ext,
        status=status,
        responded_at=f.now,
        via_timeout=via_timeout,
        reason=reason,
        failure_cause=cause,
    )


def _move_session(session: Session, trigger: str, guard: Guard, **changes: Any) -> Session:
    try:
        status = SESSION_MACHINE.fire(session.status, trigger, guard)
    except InvalidMove:
        raise ExtensionError(
            ErrorCode.INVALID_STATE,
            f"Session is {session.status.value}; it cannot {trigger}",
        ) from None
    return _evolve(session, status=status, **changes)


def _fail_payment(
    payment: PaymentSession | None, cause: FailureCause
) -> Change[PaymentSession] | None:
    if payment is None or payment.status is not PaymentStatus.CONFIRMED:
        return None
    return Change(
        str(payment.status), _evolve(payment, status=PaymentStatus.FAILED, failure_cause=cause)
    )


def _payment_log(
    change: Change[PaymentSession] | None, event: str, actor: str, f: Facts
) -> tuple[TransitionRecord, ...]:
    if change is None:
        return ()
    row = change.row
    return (
        TransitionRecord(
            entity="payment",
            entity_id=row.id,
            from_status=change.expected,
            to_status=str(row.status),
            event=event,
            actor=actor,
            at=f.now,
            cause=str(row.failure_cause) if row.failure_cause else None,
        ),
    )


def _record(
    entity: str,
    entity_id: str,
    before: ExtensionStatus | SessionStatus | PaymentStatus | None,
    after: ExtensionStatus | SessionStatus | PaymentStatus,
    event: str,
    actor: str,
    f: Facts,
    cause: FailureCause | None = None,
) -> TransitionRecord:
    return TransitionRecord(
        entity=entity,
        entity_id=entity_id,
        from_status=str(before) if before is not None else None,
        to_status=str(after),
        event=event,
        actor=actor,
        at=f.now,
        cause=str(cause) if cause else None,
    )
