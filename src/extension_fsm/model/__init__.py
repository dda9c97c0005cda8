"""Value objects of the extension flow: statuses, rows, events, facts, effects.

Everything here is a frozen dataclass or an Enum, in four modules read in
this order: :mod:`.values` (the statuses and other names the flow speaks
in), :mod:`.entities` (what is stored), :mod:`.events` (what happens, and the
:class:`Facts` a decision is made on) and :mod:`.effects` (what a committed
decision asks of the world).  Import them from here.
"""

from __future__ import annotations

from .effects import (
    ClearClosureGrace,
    Effect,
    Notify,
    PaymentConsumed,
    PaymentFailed,
    PushMessage,
    SessionExpiryExtended,
    StartClosureGrace,
)
from .entities import (
    Extension,
    LedgerEntry,
    PaymentSession,
    PendingExtensionInfo,
    Session,
    TransitionRecord,
    set_aside_delay,
)
from .events import (
    DEFAULT_STALE_AFTER_SECONDS,
    EndSession,
    Event,
    Facts,
    RequestExtension,
    RespondToExtension,
    TimeoutExtension,
)
from .values import (
    ACTOR_CUSTOMER,
    ACTOR_HOST,
    ACTOR_MITRA,
    ACTOR_SYSTEM,
    ExtensionStatus,
    FailureCause,
    JSONValue,
    MessageType,
    Participant,
    PaymentStatus,
    SessionStatus,
    TimeoutAction,
    TimeoutReason,
    TransactionType,
)

__all__ = [
    "ACTOR_CUSTOMER",
    "ACTOR_HOST",
    "ACTOR_MITRA",
    "ACTOR_SYSTEM",
    "DEFAULT_STALE_AFTER_SECONDS",
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
