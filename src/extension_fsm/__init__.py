"""extension_fsm: paid chat-session extensions, correct under every race.

A customer asks to extend a chat session, the mitra accepts or rejects, or a
server-side deadline decides.  :class:`ExtensionService` runs that flow over
pluggable ports (see :mod:`extension_fsm.ports` and
:mod:`extension_fsm.adapters`); the decisions themselves are pure
(:func:`extension_fsm.core.decide`) and every status move goes through one
``transitions`` machine definition (:mod:`extension_fsm.machine`).
"""

from __future__ import annotations

from .core import Decision, Snapshot, decide
from .errors import ConcurrencyConflict, DeliveryError, ErrorCode, ExtensionError
from .model import (
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
    PendingExtensionInfo,
    PushMessage,
    Session,
    SessionStatus,
    TimeoutAction,
    TimeoutReason,
    TransactionType,
    TransitionRecord,
)
from .outbox import DispatchReport, OutboxDispatcher
from .service import ExtensionService
from .sweeper import run_sweeper

__all__ = [
    "ConcurrencyConflict",
    "Decision",
    "DeliveryError",
    "DispatchReport",
    "ErrorCode",
    "Extension",
    "ExtensionError",
    "ExtensionService",
    "ExtensionStatus",
    "Facts",
    "FailureCause",
    "LedgerEntry",
    "MessageType",
    "OutboxDispatcher",
    "Participant",
    "PaymentConsumed",
    "PaymentFailed",
    "PaymentSession",
    "PaymentStatus",
    "PendingExtensionInfo",
    "PushMessage",
    "Session",
    "SessionStatus",
    "Snapshot",
    "TimeoutAction",
    "TimeoutReason",
    "TransactionType",
    "TransitionRecord",
    "__version__",
    "decide",
    "run_sweeper",
]

__version__ = "0.3.0"
