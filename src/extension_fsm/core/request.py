"""A customer asks for more minutes: the request is checked, the session paused."""

from __future__ import annotations

from datetime import timedelta

from .. import messages
from ..errors import ErrorCode, ExtensionError
from ..machine import EXTENSION_MACHINE
from ..model import (
    ACTOR_CUSTOMER,
    Extension,
    Facts,
    PaymentStatus,
    RequestExtension,
    SessionStatus,
    TransitionRecord,
)
from ..validation import whole_number
from .outcomes import EXPIRY_OUT_OF_RANGE, extended_expiry, move_session, record
from .snapshot import MAX_DURATION_MINUTES, MIN_DURATION_MINUTES, Change, Decision, Snapshot

__all__ = ["request"]


def request(s: Snapshot, e: RequestExtension, f: Facts) -> Decision:
    """A new pending extension on ``s.payment``; the session pauses while the mitra decides."""
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
    if payment is None or payment.customer_id != e.customer_id:
        # Another customer's payment session reads as one that does not exist:
        # the same code and text, so the answer never tells whether it does.
        raise ExtensionError(ErrorCode.NOT_FOUND, "Payment session not found")
    if payment.status is not PaymentStatus.CONFIRMED:
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
    duration = whole_number(e.duration_minutes, "duration_minutes")
    if not MIN_DURATION_MINUTES <= duration <= MAX_DURATION_MINUTES:
        raise ExtensionError(
            ErrorCode.VALIDATION_ERROR,
            f"duration_minutes must be between {MIN_DURATION_MINUTES} and {MAX_DURATION_MINUTES}",
        )
    price = whole_number(e.price, "price")
    if price != payment.amount:
        # The seed took the price on trust; the payment session is what was paid.
        raise ExtensionError(
            ErrorCode.VALIDATION_ERROR,
            f"price {price} does not match the payment session amount {payment.amount}",
        )
    if extended_expiry(session, f.now, duration) is None:
        # An expiry the host set to ``infinity`` (or near 9999-12-31): no
        # minutes can be added, so no extension is asked for, or ever charged.
        raise ExtensionError(ErrorCode.INVALID_STATE, EXPIRY_OUT_OF_RANGE)
    if s.pending is not None:
        raise ExtensionError(ErrorCode.EXTENSION_PENDING, "An extension request is already pending")
    if s.payment_live is not None:
        raise ExtensionError(
            ErrorCode.PAYMENT_IN_USE, "Payment session already backs another extension"
        )

    now = f.now
    paused = move_session(
        session,
        "pause",
        now,
        expires_at=session.expires_at,
        closure_deadline=session.closure_deadline,
    )
    expires_at = now + timedelta(seconds=f.timeout_seconds)
    extension = Extension(
        id=f.new_extension_id,
        session_id=session.id,
        duration_minutes=duration,
        price=price,
        payment_session_id=payment.id,
        status=EXTENSION_MACHINE.initial,  # a new request starts where the machine starts
        requested_at=now,
        expires_at=expires_at,
        timeout_seconds=f.timeout_seconds,
    )
    created = TransitionRecord(
        entity="extension",
        entity_id=extension.id,
        from_status=None,
        to_status=str(extension.status),
        event="request",
        actor=ACTOR_CUSTOMER,
        at=now,
    )
    return Decision(
        extension=Change(None, extension),
        session=Change(str(session.status), paused),
        log=(created, record(session, paused.status, "pause", ACTOR_CUSTOMER, now)),
        effects=(
            messages.extension_request(session, extension),
            messages.session_paused(session, extension),
        ),
        timer=(extension.id, expires_at),
    )
