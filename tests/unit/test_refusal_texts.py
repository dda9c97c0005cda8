"""The body a host returns for each refusal of the core: code, HTTP status and
text together (``ExtensionError.to_dict()``).

``docs/differences.md`` promises that every refusal the old service made keeps
its code, status and message, and apps show the message or key on it; the
refusals the old service did not make keep theirs from release to release.
Each case is one refusal, decided by the pure core on a snapshot.
"""

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
    decide,
)
from extension_fsm.model import EndSession, Event, RequestExtension, RespondToExtension
from extension_fsm.simulator import make_payment, make_session

T0 = datetime(2026, 1, 1, tzinfo=UTC)
ACTIVE = make_session(expires_at=T0 + timedelta(minutes=30))
EXTENDING = replace(ACTIVE, status=SessionStatus.EXTENDING)
PAYMENT = make_payment()
PENDING = Extension(
    "e1", "s1", 30, 15000, "p1", ExtensionStatus.PENDING, T0, T0 + timedelta(seconds=10), 10
)
NOW = Facts(now=T0 + timedelta(seconds=1), new_extension_id="e2")


def _ask(
    duration: object = 30, price: object = 15000, payment: str | None = "p1"
) -> RequestExtension:
    return RequestExtension("s1", "c1", duration, price, payment)


def _answer(accepted: bool = True, *, extension: str = "e1", mitra: str = "m1") -> Event:
    return RespondToExtension(extension, "s1", mitra, accepted)


def _asking(**changes: object) -> Snapshot:
    """A request's snapshot: the active session and its payment, changed as given."""
    return replace(Snapshot(session=ACTIVE, payment=PAYMENT), **changes)  # type: ignore[arg-type]


def _answering(**changes: object) -> Snapshot:
    """An answer's snapshot: the pending extension, its session and payment."""
    base = Snapshot(session=EXTENDING, extension=PENDING, payment=PAYMENT)
    return replace(base, **changes)  # type: ignore[arg-type]


def _payment(**changes: object) -> object:
    return replace(PAYMENT, **changes)  # type: ignore[arg-type]


def _session(**changes: object) -> object:
    return replace(EXTENDING, **changes)  # type: ignore[arg-type]


# (snapshot, event, facts, code, status, message)
CASES = {
    # -- request
    "request on an unknown session": (
        Snapshot(session=None, payment=PAYMENT),
        _ask(),
        NOW,
        "SESSION_NOT_ACTIVE",
        409,
        "Session not found or already ended",
    ),
    "request by another customer": (
        _asking(session=replace(ACTIVE, customer_id="c2")),
        _ask(),
        NOW,
        "SESSION_NOT_ACTIVE",
        409,
        "Session not found or already ended",
    ),
    "request on an extending session": (
        _asking(session=EXTENDING),
        _ask(),
        NOW,
        "SESSION_NOT_ACTIVE",
        409,
        "Session not found or already ended",
    ),
    "request without a payment session": (
        _asking(),
        _ask(payment=""),
        NOW,
        "VALIDATION_ERROR",
        422,
        "extension_payment_session_id is required",
    ),
    "request with an unknown payment session": (
        _asking(payment=None),
        _ask(),
        NOW,
        "NOT_FOUND",
        404,
        "Payment session not found",
    ),
    "request with someone else's payment": (
        _asking(payment=_payment(customer_id="c2")),
        _ask(),
        NOW,
        "NOT_FOUND",  # as one that does not exist: its existence is not told
        404,
        "Payment session not found",
    ),
    "request with a consumed payment": (
        _asking(payment=_payment(status=PaymentStatus.CONSUMED)),
        _ask(),
        NOW,
        "INVALID_STATE",
        409,
        "Payment session is consumed, must be confirmed",
    ),
    "request with a payment in a host status": (
        _asking(payment=_payment(status=PaymentStatus.UNKNOWN, unknown_status="refunded")),
        _ask(),
        NOW,
        "INVALID_STATE",
        409,
        "Payment session is refunded, must be confirmed",
    ),
    "request with a payment not flagged as an extension": (
        _asking(payment=_payment(is_extension=False)),
        _ask(),
        NOW,
        "INVALID_STATE",
        409,
        "Payment session is not flagged as an extension payment",
    ),
    "request with a first-session discount": (
        _asking(payment=_payment(is_first_session_discount=True)),
        _ask(),
        NOW,
        "FIRST_SESSION_DISCOUNT_NOT_ALLOWED",
        400,
        "First-session discount is not available for extensions",
    ),
    "duration that is not a whole number": (
        _asking(),
        _ask(duration="30"),
        NOW,
        "VALIDATION_ERROR",
        422,
        "duration_minutes must be a whole number",
    ),
    "duration true": (
        _asking(),
        _ask(duration=True),
        NOW,
        "VALIDATION_ERROR",
        422,
        "duration_minutes must be a whole number",
    ),
    "duration zero": (
        _asking(),
        _ask(duration=0),
        NOW,
        "VALIDATION_ERROR",
        422,
        "duration_minutes must be positive",
    ),
    "duration past a day": (
        _asking(),
        _ask(duration=1441),
        NOW,
        "VALIDATION_ERROR",
        422,
        "duration_minutes must be between 1 and 1440",
    ),
    "price that is not a whole number": (
        _asking(),
        _ask(price=15000.5),
        NOW,
        "VALIDATION_ERROR",
        422,
        "price must be a whole number",
    ),
    "negative price": (
        _asking(),
        _ask(price=-15000),
        NOW,
        "VALIDATION_ERROR",
        422,
        "price must be positive",
    ),
    "price other than the payment's": (
        _asking(),
        _ask(price=14999),
        NOW,
        "VALIDATION_ERROR",
        422,
        "price 14999 does not match the payment session amount 15000",
    ),
    "request on a session whose expiry cannot be extended": (
        _asking(session=replace(ACTIVE, expires_at=datetime.max.replace(tzinfo=UTC))),
        _ask(),
        NOW,
        "INVALID_STATE",
        409,
        "Session expiry is out of range; it cannot be extended",
    ),
    "a second request while one is pending": (
        _asking(pending=PENDING),
        _ask(),
        NOW,
        "EXTENSION_PENDING",
        409,
        "An extension request is already pending",
    ),
    "a payment that backs another extension": (
        _asking(payment_live=replace(PENDING, session_id="s2")),
        _ask(),
        NOW,
        "PAYMENT_IN_USE",
        409,
        "Payment session already backs another extension",
    ),
    # -- answer
    "answer by someone who is not the mitra": (
        _answering(),
        _answer(mitra="m2"),
        NOW,
        "FORBIDDEN",
        403,
        "Session not found",
    ),
    "answer on an unknown session": (
        _answering(session=None),
        _answer(),
        NOW,
        "FORBIDDEN",
        403,
        "Session not found",
    ),
    "answer to an unknown extension": (
        _answering(extension=None),
        _answer(extension="nope"),
        NOW,
        "EXTENSION_RESOLVED",
        409,
        "Extension not found or already resolved",
    ),
    "answer naming another session's extension": (
        _answering(extension=replace(PENDING, session_id="s2")),
        _answer(),
        NOW,
        "EXTENSION_RESOLVED",
        409,
        "Extension not found or already resolved",
    ),
    "a second answer": (
        _answering(extension=replace(PENDING, status=ExtensionStatus.REJECTED)),
        _answer(),
        NOW,
        "EXTENSION_RESOLVED",
        409,
        "Extension not found or already resolved",
    ),
    "an answer after the window": (
        _answering(),
        _answer(),
        replace(NOW, now=T0 + timedelta(seconds=11)),
        "EXTENSION_RESOLVED",
        409,
        "The answer window has passed",
    ),
    "a rejection after the window": (
        _answering(),
        _answer(accepted=False),
        replace(NOW, now=T0 + timedelta(seconds=11)),
        "EXTENSION_RESOLVED",
        409,
        "The answer window has passed",
    ),
    "an answer on a session the host ended": (
        _answering(session=_session(status=SessionStatus.ENDED)),
        _answer(),
        NOW,
        "SESSION_NOT_ACTIVE",
        409,
        "Session already ended",
    ),
    "an answer on a session in a host status": (
        _answering(session=_session(status=SessionStatus.UNKNOWN, unknown_status="suspended")),
        _answer(),
        NOW,
        "SESSION_NOT_ACTIVE",
        409,
        "Session is not active",
    ),
    "an approval once the payment is no longer confirmed": (
        _answering(payment=_payment(status=PaymentStatus.FAILED)),
        _answer(),
        NOW,
        "INVALID_STATE",
        409,
        "Payment session is no longer confirmed",
    ),
    "an approval of a request that has no payment session": (
        _answering(extension=replace(PENDING, payment_session_id=None), payment=None),
        _answer(),
        NOW,
        "INVALID_STATE",
        409,
        "Extension has no payment session",
    ),
    "an approval whose payment session row is gone": (
        _answering(payment=None),
        _answer(),
        NOW,
        "INVALID_STATE",
        409,
        "Payment session not found",
    ),
    "an approval past the last expiry a timestamp can hold": (
        _answering(session=_session(expires_at=datetime.max.replace(tzinfo=UTC))),
        _answer(),
        NOW,
        "INVALID_STATE",
        409,
        "Session expiry is out of range; it cannot be extended",
    ),
    "an approval on a session the host moved back to active": (
        _answering(session=_session(status=SessionStatus.ACTIVE)),
        _answer(),
        NOW,
        "INVALID_STATE",
        409,
        "Session is active; it cannot resume",
    ),
    "a rejection on a session the host moved to closing": (
        _answering(session=_session(status=SessionStatus.CLOSING)),
        _answer(accepted=False),
        NOW,
        "INVALID_STATE",
        409,
        "Session is closing; it cannot close",
    ),
    # -- end
    "ending an unknown session": (
        Snapshot(session=None),
        EndSession("nope"),
        NOW,
        "NOT_FOUND",
        404,
        "Session not found",
    ),
    "ending a session in a host status": (
        Snapshot(session=_session(status=SessionStatus.UNKNOWN, unknown_status="suspended")),
        EndSession("s1"),
        NOW,
        "INVALID_STATE",
        409,
        "Session is suspended; it cannot end",
    ),
}


@pytest.mark.parametrize(
    ("snapshot", "event", "facts", "code", "status", "message"),
    list(CASES.values()),
    ids=list(CASES),
)
def test_each_refusal_keeps_its_code_status_and_text(
    snapshot: Snapshot, event: Event, facts: Facts, code: str, status: int, message: str
) -> None:
    with pytest.raises(ExtensionError) as refused:
        decide(snapshot, event, facts)
    assert refused.value.to_dict() == {"code": code, "message": message, "status_code": status}
