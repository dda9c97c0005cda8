"""Value objects of the extension flow: statuses, rows, events, facts, effects.

Everything here is a frozen dataclass or an Enum.  Enum values are the
seed's lowercase wire names, so they go to storage and JSON unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TypeAlias

from .wire import js_date

__all__ = [
    "ACTOR_CUSTOMER",
    "ACTOR_HOST",
    "ACTOR_MITRA",
    "ACTOR_SYSTEM",
    "ClearClosureGrace",
    "Effect",
    "EndSession",
    "Event",
    "Extension",
    "ExtensionStatus",
    "Facts",
    "FailureCause",
    "JSONValue",
    "LedgerEntry",
    "MessageType",
    "Notify",
    "Participant",
    "PaymentConsumed",
    "PaymentFailed",
    "PaymentSession",
    "PaymentStatus",
    "PendingExtensionInfo",
    "PushMessage",
    "RequestExtension",
    "RespondToExtension",
    "Session",
    "SessionExpiryExtended",
    "SessionStatus",
    "StartClosureGrace",
    "TimeoutAction",
    "TimeoutExtension",
    "TimeoutReason",
    "TransactionType",
    "TransitionRecord",
    "set_aside_delay",
]

JSONValue: TypeAlias = "str | int | float | bool | list[JSONValue] | dict[str, JSONValue] | None"


class ExtensionStatus(StrEnum):
    """Where an extension request is: ``pending`` until exactly one resolution."""

    PENDING = "pending"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    TIMEOUT = "timeout"


class SessionStatus(StrEnum):
    """A chat session's status as far as extensions are concerned; ``ended`` is final."""

    ACTIVE = "active"
    CLOSING = "closing"
    EXTENDING = "extending"
    ENDED = "ended"
    #: a value the host wrote that this library does not know (``Session.unknown_status``
    #: keeps the text): never extendable, never charged, never written back
    UNKNOWN = "unknown"

    @classmethod
    def read(cls, value: str) -> tuple[SessionStatus, str | None]:
        """The status a stored value names, and the value itself when it is unknown."""
        status = _KNOWN_SESSION.get(value)
        return (status, None) if status is not None else (cls.UNKNOWN, value)


class PaymentStatus(StrEnum):
    """A payment session's status; ``confirmed`` is paid-for but not yet charged."""

    PENDING = "pending"
    CONFIRMED = "confirmed"
    CONSUMED = "consumed"
    FAILED = "failed"
    #: a value the host wrote that this library does not know (``PaymentSession.unknown_status``
    #: keeps the text): never chargeable, never written back
    UNKNOWN = "unknown"

    @classmethod
    def read(cls, value: str) -> tuple[PaymentStatus, str | None]:
        """The status a stored value names, and the value itself when it is unknown."""
        status = _KNOWN_PAYMENT.get(value)
        return (status, None) if status is not None else (cls.UNKNOWN, value)


# value -> status for every status a stored row may name ("unknown" itself is not one)
_KNOWN_SESSION = {s.value: s for s in SessionStatus if s is not SessionStatus.UNKNOWN}
_KNOWN_PAYMENT = {p.value: p for p in PaymentStatus if p is not PaymentStatus.UNKNOWN}


class TimeoutAction(StrEnum):
    """What the server does when the mitra does not answer in time."""

    AUTO_APPROVE = "auto_approve"
    AUTO_REJECT = "auto_reject"

    @classmethod
    def parse(cls, value: object) -> TimeoutAction:
        """The seed's rule: any unknown value means ``auto_approve``."""
        for action in cls:
            if value == action.value:
                return action
        return cls.AUTO_APPROVE


class FailureCause(StrEnum):
    """Why a payment session was failed (the failed-pairings audit tag)."""

    EXTENSION_REJECTED = "extension_rejected"
    EXTENSION_SAFEGUARD_TRIPPED = "extension_safeguard_tripped"
    SESSION_ENDED = "session_ended"


class TimeoutReason(StrEnum):
    """The ``reason`` a timed-out extension tells the customer."""

    TIMEOUT = "timeout"
    SAFEGUARD = "safeguard"


class MessageType(StrEnum):
    """WebSocket / push message types (the seed's ``WsMessage`` values)."""

    EXTENSION_REQUEST = "extension_request"
    SESSION_PAUSED = "session_paused"
    EXTENSION_RESPONSE = "extension_response"
    SESSION_RESUMED = "session_resumed"
    SESSION_CLOSING = "session_closing"


class Participant(StrEnum):
    """The two sides of a chat session (the seed's ``UserType``)."""

    CUSTOMER = "customer"
    MITRA = "mitra"


class TransactionType(StrEnum):
    """Ledger row types this library writes."""

    EXTENSION = "extension"


ACTOR_CUSTOMER = "customer"
ACTOR_MITRA = "mitra"
ACTOR_SYSTEM = "system"
ACTOR_HOST = "host"


# --------------------------------------------------------------------------- rows


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


# --------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class RequestExtension:
    """The customer asks for ``duration_minutes`` more, paid by a payment session."""

    session_id: str
    customer_id: str
    duration_minutes: object
    price: object
    payment_session_id: str | None


@dataclass(frozen=True, slots=True)
class RespondToExtension:
    """The mitra accepts or rejects."""

    extension_id: str
    session_id: str
    mitra_id: str
    accepted: bool


@dataclass(frozen=True, slots=True)
class TimeoutExtension:
    """The answer deadline passed (timer or sweep)."""

    extension_id: str


@dataclass(frozen=True, slots=True)
class EndSession:
    """The host ends the session (grace over, or closed by a participant)."""

    session_id: str


Event: TypeAlias = RequestExtension | RespondToExtension | TimeoutExtension | EndSession


@dataclass(frozen=True, slots=True)
class Facts:
    """What the shell knows of the world at decision time; the core reads nothing else."""

    now: datetime
    timeout_seconds: int = 10
    timeout_action: TimeoutAction = TimeoutAction.AUTO_APPROVE
    grace_seconds: int = 60
    mitra_connected: bool = False
    mitra_online: bool = False
    new_extension_id: str = ""


# --------------------------------------------------------------------------- effects


@dataclass(frozen=True, slots=True)
class PushMessage:
    """A push notification (FCM) to every device of one user."""

    title: str
    body: str
    data: Mapping[str, JSONValue] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Notify:
    """Send ``message`` to one participant's socket on the session; if no socket
    takes it and ``push`` is set, push it instead."""

    session_id: str
    recipient: Participant
    user_id: str
    message: Mapping[str, JSONValue]
    dedupe_key: str
    push: PushMessage | None = None


@dataclass(frozen=True, slots=True)
class StartClosureGrace:
    """Tell the host's session timer to start the closure grace period."""

    session_id: str
    deadline: datetime


@dataclass(frozen=True, slots=True)
class ClearClosureGrace:
    """Tell the host's session timer to cancel a running closure grace period."""

    session_id: str


@dataclass(frozen=True, slots=True)
class SessionExpiryExtended:
    """Tell the host's session timer about the session's new expiry."""

    session_id: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class PaymentConsumed:
    """Tell the host an extension's payment session was consumed (the seed's
    ``consumePaymentSession``): run the money side effects of a charge."""

    session_id: str
    extension_id: str
    payment_session_id: str
    customer_id: str
    amount: int
    duration_minutes: int
    via_timeout: bool
    at: datetime

    @property
    def dedupe_key(self) -> str:
        """The same for every delivery of this event: the host drops repeats by it."""
        return f"{self.extension_id}:payment_consumed:{self.payment_session_id}"


@dataclass(frozen=True, slots=True)
class PaymentFailed:
    """Tell the host an extension's payment session was failed (the seed's
    ``failPaymentSession``), with the cause the seed wrote on its
    failed-pairings audit row: ``extension_rejected`` (the mitra said no, or
    the configured timeout action is to reject), ``extension_safeguard_tripped``
    (an auto-approve found the mitra unreachable) or ``session_ended``."""

    session_id: str
    extension_id: str
    payment_session_id: str
    customer_id: str
    amount: int
    cause: FailureCause
    at: datetime

    @property
    def dedupe_key(self) -> str:
        """The same for every delivery of this event: the host drops repeats by it."""
        return f"{self.extension_id}:payment_failed:{self.payment_session_id}"


Effect: TypeAlias = (
    Notify
    | StartClosureGrace
    | ClearClosureGrace
    | SessionExpiryExtended
    | PaymentConsumed
    | PaymentFailed
)


def set_aside_delay(times: int) -> timedelta:
    """How long a due extension the sweep could not decide is skipped after its
    ``times``-th failure: 30 s, doubling, at most an hour."""
    return timedelta(seconds=min(30 * 2 ** min(max(times, 1) - 1, 16), 3600))
