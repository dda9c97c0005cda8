"""The ports: what the shell needs from the world, each a few methods.

Adapters in :mod:`extension_fsm.adapters` fill them: in memory, SQLAlchemy
(SQLite, PostgreSQL), Redis, firebase-admin, asyncio.  The core never sees a
port; the service talks to them only around a decision.  Three modules:
:mod:`.storage` (a unit of work's reads and decision write, the outbox),
:mod:`.delivery` (sockets, presence, push, the host's timers and payment
events) and
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
    DecisionWriter,
    InspectableStore,
    OutboxMessage,
    OutboxStore,
    SnapshotLoader,
    Store,
    StoreDump,
    UnitOfWork,
)

__all__ = [
    "Clock",
    "ConfigSource",
    "DecisionWriter",
    "DeviceTokens",
    "InspectableStore",
    "OutboxMessage",
    "OutboxStore",
    "PaymentEvents",
    "Presence",
    "PushSender",
    "Scheduler",
    "SessionSockets",
    "SessionTimer",
    "SnapshotLoader",
    "Store",
    "StoreDump",
    "TimerHandle",
    "UnitOfWork",
    "stale_after_seconds",
]
