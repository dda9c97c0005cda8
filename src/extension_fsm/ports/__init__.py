"""The ports: what the shell needs from the world, each a few methods.

Adapters in :mod:`extension_fsm.adapters` fill them: in memory, SQLAlchemy
(SQLite, PostgreSQL), Redis, firebase-admin, asyncio.  The core never sees a
port; the service talks to them only around a decision.  Three modules:
:mod:`.storage` (the rows, the unit of work, the outbox), :mod:`.delivery`
(sockets, presence, push, the host's timers and payment events) and
:mod:`.runtime` (clock, scheduler, configuration).  Import them from here.
"""

from __future__ import annotations

from .delivery import (
    DeviceTokens,
    PaymentEvents,
    Presence,
    PushSender,
    SessionSockets,
    SessionTimer,
)
from .runtime import Clock, ConfigSource, Scheduler, TimerHandle, stale_after_seconds
from .storage import (
    AuditLog,
    DecisionWriter,
    ExtensionRepository,
    InspectableStore,
    LedgerRepository,
    OutboxMessage,
    OutboxRepository,
    OutboxStore,
    PaymentRepository,
    SessionRepository,
    SnapshotLoader,
    Store,
    StoreDump,
    UnitOfWork,
)

__all__ = [
    "AuditLog",
    "Clock",
    "ConfigSource",
    "DecisionWriter",
    "DeviceTokens",
    "ExtensionRepository",
    "InspectableStore",
    "LedgerRepository",
    "OutboxMessage",
    "OutboxRepository",
    "OutboxStore",
    "PaymentEvents",
    "PaymentRepository",
    "Presence",
    "PushSender",
    "Scheduler",
    "SessionRepository",
    "SessionSockets",
    "SessionTimer",
    "SnapshotLoader",
    "Store",
    "StoreDump",
    "TimerHandle",
    "UnitOfWork",
    "stale_after_seconds",
]
