"""Rows to the model's records and back (shared by the store and the joined loads)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Row, Select, select

from ...model import (
    Extension,
    ExtensionStatus,
    FailureCause,
    LedgerEntry,
    PaymentSession,
    PaymentStatus,
    Session,
    SessionStatus,
    TimeoutReason,
    TransactionType,
    TransitionRecord,
)
from ...ports import OutboxMessage
from .schema import Tables


def _session_select(t: Tables) -> Select[Any]:
    s, c = t.sessions, t.customers
    return (
        select(s, c.c.display_name)
        .select_from(s.outerjoin(c, c.c.id == s.c.customer_id))
        .order_by(s.c.id)
    )


def _cause(value: str | None) -> FailureCause | None:
    """A payment's failure cause as stored; one the host wrote that this library
    does not know reads as none (it is only ever shown, never decided on)."""
    return FailureCause.read(value)[0]


def _session(r: Any) -> Session:
    # A status the host wrote that the library does not know is read as UNKNOWN
    # with its text kept: decided on (refused, or timed out uncharged), never a crash.
    status, unknown = SessionStatus.read(r.status)
    return Session(
        id=r.id,
        customer_id=r.customer_id,
        mitra_id=r.mitra_id,
        status=status,
        expires_at=r.expires_at,
        customer_display_name=r.display_name or "",
        topic_sensitivity=r.topic_sensitivity,
        closure_deadline=r.closure_deadline,
        unknown_status=unknown,
    )


def _session_values(s: Session) -> dict[str, Any]:
    return {
        "id": s.id,
        "customer_id": s.customer_id,
        "mitra_id": s.mitra_id,
        "status": s.unknown_status or s.status.value,
        "expires_at": s.expires_at,
        "closure_deadline": s.closure_deadline,
        "topic_sensitivity": s.topic_sensitivity,
    }


def _payment(r: Any) -> PaymentSession:
    status, unknown = PaymentStatus.read(r.status)
    return PaymentSession(
        id=r.id,
        customer_id=r.customer_id,
        status=status,
        amount=r.amount,
        is_extension=r.is_extension,
        is_first_session_discount=r.is_first_session_discount,
        failure_cause=_cause(r.failure_cause),
        unknown_status=unknown,
    )


def _payment_values(p: PaymentSession) -> dict[str, Any]:
    return {
        "id": p.id,
        "customer_id": p.customer_id,
        "status": p.unknown_status or p.status.value,
        "amount": p.amount,
        "is_extension": p.is_extension,
        "is_first_session_discount": p.is_first_session_discount,
        "failure_cause": p.failure_cause.value if p.failure_cause else None,
    }


def _extension(r: Any) -> Extension:
    # Texts the host wrote that the library does not know (a status, a reason, a
    # failure cause) are read as UNKNOWN / none with the text kept: decided on
    # (an unknown status is not pending), never a crash, written back unchanged.
    status, unknown_status = ExtensionStatus.read(r.status)
    reason, unknown_reason = TimeoutReason.read(r.reason)
    cause, unknown_cause = FailureCause.read(r.failure_cause)
    return Extension(
        id=r.id,
        session_id=r.session_id,
        duration_minutes=r.duration_minutes,
        price=r.price,
        payment_session_id=r.payment_session_id,
        status=status,
        requested_at=r.requested_at,
        expires_at=r.expires_at,
        timeout_seconds=r.timeout_seconds,
        responded_at=r.responded_at,
        via_timeout=r.via_timeout,
        reason=reason,
        failure_cause=cause,
        unknown_status=unknown_status,
        unknown_reason=unknown_reason,
        unknown_failure_cause=unknown_cause,
    )


def _extension_values(e: Extension) -> dict[str, Any]:
    return {
        "id": e.id,
        "session_id": e.session_id,
        "duration_minutes": e.duration_minutes,
        "price": e.price,
        "payment_session_id": e.payment_session_id,
        "status": e.unknown_status or e.status.value,
        "requested_at": e.requested_at,
        "expires_at": e.expires_at,
        "timeout_seconds": e.timeout_seconds,
        "responded_at": e.responded_at,
        "via_timeout": e.via_timeout,
        "reason": e.reason.value if e.reason else e.unknown_reason,
        "failure_cause": e.failure_cause.value if e.failure_cause else e.unknown_failure_cause,
        # an extension written by a decision is decided: no longer set aside
        "set_aside_until": None,
    }


def _ledger_values(entry: LedgerEntry) -> dict[str, Any]:
    return {
        "customer_id": entry.customer_id,
        "session_id": entry.session_id,
        "extension_id": entry.extension_id,
        "type": entry.type.value,
        "amount": entry.amount,
        "created_at": entry.created_at,
    }


def _record_values(r: TransitionRecord) -> dict[str, Any]:
    return {
        "entity": r.entity,
        "entity_id": r.entity_id,
        "from_status": r.from_status,
        "to_status": r.to_status,
        "event": r.event,
        "cause": r.cause,
        "actor": r.actor,
        "at": r.at,
    }


def _outbox_values(m: OutboxMessage) -> dict[str, Any]:
    return {
        "id": m.id,
        "kind": m.kind,
        "dedupe_key": m.dedupe_key,
        "payload": dict(m.payload),
        "created_at": m.created_at,
        "available_at": m.created_at,
        "attempts": m.attempts,
        "lane": m.lane,
    }


def _ledger(r: Row[Any]) -> LedgerEntry:
    return LedgerEntry(
        customer_id=r.customer_id,
        session_id=r.session_id,
        extension_id=r.extension_id,
        type=TransactionType(r.type),
        amount=r.amount,
        created_at=r.created_at,
    )


def _record(r: Row[Any]) -> TransitionRecord:
    return TransitionRecord(
        entity=r.entity,
        entity_id=r.entity_id,
        from_status=r.from_status,
        to_status=r.to_status,
        event=r.event,
        actor=r.actor,
        at=r.at,
        cause=r.cause,
    )
