"""The rows the flow reads and writes: the host's session and payment session,
the extension, the ledger entry, the audit record; all frozen dataclasses."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from ..wire import js_date
from .values import (
    ExtensionStatus,
    FailureCause,
    JSONValue,
    PaymentStatus,
    SessionStatus,
    TimeoutReason,
    TransactionType,
)

__all__ = [
    "Extension",
    "LedgerEntry",
    "PaymentSession",
    "PendingExtensionInfo",
    "Session",
    "TransitionRecord",
    "set_aside_delay",
]


@dataclass(frozen=True, slots=True)
class Session:
    """The host's chat session, as much of it as the flow reads and writes."""

    id: str
    customer_id: str
    mitra_id: str
    status: SessionStatus
    expires_at: datetime
    customer_display_name: str = ""
    topic_sensitivity: str | None = None
    closure_deadline: datetime | None = None
    #: the stored status text when ``status`` is ``UNKNOWN`` (for logs and messages)
    unknown_status: str | None = None


@dataclass(frozen=True, slots=True)
class PaymentSession:
    """A customer's pre-paid payment session that backs one extension."""

    id: str
    customer_id: str
    status: PaymentStatus
    amount: int
    is_extension: bool = True
    is_first_session_discount: bool = False
    failure_cause: FailureCause | None = None
    #: the stored status text when ``status`` is ``UNKNOWN`` (for logs and messages)
    unknown_status: str | None = None


@dataclass(frozen=True, slots=True)
class Extension:
    """One extension request and, once resolved, its outcome.

    ``expires_at`` is the answer deadline (``requested_at + timeout_seconds``):
    data, not a timer, so a restart cannot lose it.
    """

    id: str
    session_id: str
    duration_minutes: int
    price: int
    payment_session_id: str
    status: ExtensionStatus
    requested_at: datetime
    expires_at: datetime
    timeout_seconds: int
    responded_at: datetime | None = None
    via_timeout: bool = False
    reason: TimeoutReason | None = None
    failure_cause: FailureCause | None = None
    #: the stored texts this library does not know, kept as the host wrote them
    #: (for logs, and written back unchanged): the status when ``status`` is
    #: ``UNKNOWN``, the reason and failure cause when those read as ``None``
    unknown_status: str | None = None
    unknown_reason: str | None = None
    unknown_failure_cause: str | None = None


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """A ``customer_transactions`` row: the charge of an accepted extension."""

    customer_id: str
    session_id: str
    extension_id: str
    type: TransactionType
    amount: int
    created_at: datetime


@dataclass(frozen=True, slots=True)
class TransitionRecord:
    """One state change, for the audit log: what moved, from where, to where, why."""

    entity: str  # "extension" | "session" | "payment"
    entity_id: str
    from_status: str | None
    to_status: str
    event: str
    actor: str
    at: datetime
    cause: str | None = None


@dataclass(frozen=True, slots=True)
class PendingExtensionInfo:
    """What a chat screen needs to rehydrate the accept/reject view (``/info``)."""

    extension_id: str
    duration_minutes: int
    price: int
    requested_at: datetime
    expires_at: datetime
    timeout_seconds: int

    def to_json(self) -> dict[str, JSONValue]:
        """The ``pending_extension`` object a chat screen's ``/info`` returns, as the
        replaced service sent it: same keys in the same order, timestamps in
        ``Date.toJSON()`` form (``2026-01-01T00:00:10.000Z``)."""
        return {
            "extension_id": self.extension_id,
            "duration_minutes": self.duration_minutes,
            "price": self.price,
            "requested_at": js_date(self.requested_at),
            "expires_at": js_date(self.expires_at),
            "timeout_seconds": self.timeout_seconds,
        }

    def to_payload(self) -> dict[str, JSONValue]:
        """The same object as :meth:`to_json` (the older name)."""
        return self.to_json()


def set_aside_delay(times: int) -> timedelta:
    """How long a due extension the sweep could not decide is skipped after its
    ``times``-th failure: 30 s, doubling, at most an hour."""
    return timedelta(seconds=min(30 * 2 ** min(max(times, 1) - 1, 16), 3600))
