"""The flow's vocabulary: statuses, causes, reasons, message types, participants.

Every one is a ``StrEnum`` whose values are the seed's lowercase wire names,
so they go to storage and JSON unchanged.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TypeAlias

__all__ = [
    "ACTOR_CUSTOMER",
    "ACTOR_HOST",
    "ACTOR_MITRA",
    "ACTOR_SYSTEM",
    "ExtensionStatus",
    "FailureCause",
    "JSONValue",
    "MessageType",
    "Participant",
    "PaymentStatus",
    "SessionStatus",
    "TimeoutAction",
    "TimeoutReason",
    "TransactionType",
]

JSONValue: TypeAlias = "str | int | float | bool | list[JSONValue] | dict[str, JSONValue] | None"


class ExtensionStatus(StrEnum):
    """Where an extension request is: ``pending`` until exactly one resolution."""

    PENDING = "pending"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    TIMEOUT = "timeout"
    #: a value the host wrote that this library does not know (``Extension.unknown_status``
    #: keeps the text): not pending, so never answered, timed out or charged; never written back
    UNKNOWN = "unknown"

    @classmethod
    def read(cls, value: str) -> tuple[ExtensionStatus, str | None]:
        """The status a stored value names, and the value itself when it is unknown."""
        status = _KNOWN_EXTENSION.get(value)
        return (status, None) if status is not None else (cls.UNKNOWN, value)


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
_KNOWN_EXTENSION = {e.value: e for e in ExtensionStatus if e is not ExtensionStatus.UNKNOWN}


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

    @classmethod
    def read(cls, value: str | None) -> tuple[FailureCause | None, str | None]:
        """The cause a stored value names (``None`` for none), and the value itself
        when the host wrote one this library does not know (kept, never decided on)."""
        if not value:
            return None, None
        cause = _KNOWN_CAUSES.get(value)
        return (cause, None) if cause is not None else (None, value)


class TimeoutReason(StrEnum):
    """The ``reason`` a timed-out extension tells the customer."""

    TIMEOUT = "timeout"
    SAFEGUARD = "safeguard"
    #: the deadline was handled too long after it passed (an outage, stopped
    #: workers, a cutover) to trust presence asked now: never charged
    STALE = "stale"

    @classmethod
    def read(cls, value: str | None) -> tuple[TimeoutReason | None, str | None]:
        """The reason a stored value names (``None`` for none), and the value itself
        when the host wrote one this library does not know (kept, never decided on)."""
        if not value:
            return None, None
        reason = _KNOWN_REASONS.get(value)
        return (reason, None) if reason is not None else (None, value)


_KNOWN_CAUSES = {c.value: c for c in FailureCause}
_KNOWN_REASONS = {r.value: r for r in TimeoutReason}


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
