"""Every port in memory: a store whose units of work are atomic like a
database's, and recording fakes of the delivery ports.

The store is optimistic: a unit of work reads one consistent snapshot of the
committed rows (taken at its first read), stages its writes, and at commit
checks that no row it read or wrote moved since the snapshot and
that the uniqueness rules still hold; then it applies everything at once or
raises (``ConcurrencyConflict`` / ``ExtensionError`` 409) and applies
nothing.  So races between interleaved calls play out as they would on a
database, lost updates included.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from types import TracebackType
from typing import Self

from ..errors import ConcurrencyConflict, DeliveryError, ErrorCode, ExtensionError
from ..model import (
    Extension,
    ExtensionStatus,
    JSONValue,
    LedgerEntry,
    Participant,
    PaymentSession,
    PushMessage,
    Session,
    TimeoutAction,
    TransitionRecord,
)
from ..ports import OutboxMessage, StoreDump

__all__ = [
    "Delivery",
    "MemoryConfig",
    "MemoryDeviceTokens",
    "MemoryPresence",
    "MemoryPush",
    "MemorySessionTimer",
    "MemorySockets",
    "MemoryStore",
    "MemoryUnitOfWork",
    "OutboxRow",
]

_LIVE = (ExtensionStatus.PENDING, ExtensionStatus.ACCEPTED)


@dataclass(slots=True)
class OutboxRow:
    """An outbox row with its delivery bookkeeping."""

    message: OutboxMessage
    seq: int
    available_at: datetime
    delivered_at: datetime | None = None
    dead: bool = False
    attempts: int = 0
    last_error: str | None = None


class MemoryStore:
    """Rows in dicts; see the module docstring for the transaction model."""

    def __init__(self) -> None:
        self.sessions: dict[str, Session] = {}
        self.payments: dict[str, PaymentSession] = {}
        self.extensions: dict[str, Extension] = {}
        self.ledger: list[LedgerEntry] = []
        self.log: list[TransitionRecord] = []
        self.outbox_rows: dict[str, OutboxRow] = {}
        self._versions: dict[tuple[str, str], int] = {}
        self._seq = 0
        self._lock = threading.Lock()
        self.commits = 0
        #: test hook: the next ``n`` commits raise ``ConcurrencyConflict``
        self.fail_commits = 0
        self._outbox = _MemoryOutboxStore(self)

    # host-side seeding (the host owns sessions and payments)
    def add_session(self, session: Session) -> None:
        """Seed a host session."""
        self.sessions[session.id] = session

    def add_payment(self, payment: PaymentSession) -> None:
        """Seed a host payment session."""
        self.payments[payment.id] = payment

    async def seed_session(self, session: Session) -> None:
        """Seed a host session (the ``InspectableStore`` port)."""
        self.add_session(session)

    async def seed_payment(self, payment: PaymentSession) -> None:
        """Seed a host payment session (the ``InspectableStore`` port)."""
        self.add_payment(payment)

    async def dump(self) -> StoreDump:
        """Every committed row."""
        with self._lock:
            rows = sorted(self.outbox_rows.values(), key=lambda r: r.seq)
            return StoreDump(
                sessions=list(self.sessions.values()),
                payments=list(self.payments.values()),
                extensions=list(self.extensions.values()),
                ledger=list(self.ledger),
                log=list(self.log),
                outbox=[(r.message, r.delivered_at is not None) for r in rows],
            )

    def unit_of_work(self) -> MemoryUnitOfWork:
        """A new unit of work."""
        return MemoryUnitOfWork(self)

    @property
    def outbox(self) -> _MemoryOutboxStore:
        """The outbox as the dispatcher sees it."""
        return self._outbox

    def version(self, table: str, key: str) -> int:
        return self._versions.get((table, key), 0)

    def _apply(self, uow: MemoryUnitOfWork) -> None:
        with self._lock:
            if self.fail_commits > 0:
                self.fail_commits -= 1
                raise ConcurrencyConflict("injected commit failure")
            for key, seen in uow.seen.items():
                if self._versions.get(key, 0) != seen:
                    raise ConcurrencyConflict(f"{key[0]} {key[1]} changed under this unit of work")
            for ext in uow.staged_extensions.values():
                if ext.status in _LIVE:
                    _check_unique(self.extensions, ext)
            for key in uow.written():
                self._versions[key] = self._versions.get(key, 0) + 1
            self.sessions.update(uow.staged_sessions)
            self.payments.update(uow.staged_payments)
            self.extensions.update(uow.staged_extensions)
            self.ledger.extend(uow.staged_ledger)
            self.log.extend(uow.staged_log)
            for message in uow.staged_outbox:
                self._seq += 1
                self.outbox_rows[message.id] = OutboxRow(message, self._seq, message.created_at)
            self.commits += 1


def _check_unique(rows: Mapping[str, Extension], ext: Extension) -> None:
    for other in rows.values():
        if other.id == ext.id:
            continue
        if (
            ext.status is ExtensionStatus.PENDING
            and other.status is ExtensionStatus.PENDING
            and other.session_id == ext.session_id
        ):
            raise ExtensionError(
                ErrorCode.EXTENSION_PENDING, "An extension request is already pending"
            )
        if other.status in _LIVE and other.payment_session_id == ext.payment_session_id:
            raise ExtensionError(
                ErrorCode.PAYMENT_IN_USE, "Payment session already backs another extension"
            )


@dataclass(frozen=True, slots=True)
class _View:
    sessions: dict[str, Session]
    payments: dict[str, PaymentSession]
    extensions: dict[str, Extension]
    versions: dict[tuple[str, str], int]


class MemoryUnitOfWork:
    """One optimistic transaction over a :class:`MemoryStore`."""

    def __init__(self, store: MemoryStore) -> None:
        self._store = store
        self.seen: dict[tuple[str, str], int] = {}
        self.staged_sessions: dict[str, Session] = {}
        self.staged_payments: dict[str, PaymentSession] = {}
        self.staged_extensions: dict[str, Extension] = {}
        self.staged_ledger: list[LedgerEntry] = []
        self.staged_log: list[TransitionRecord] = []
        self.staged_outbox: list[OutboxMessage] = []
        self.sessions = _Sessions(self)
        self.payments = _Payments(self)
        self.extensions = _Extensions(self)
        self.ledger = _Ledger(self)
        self.log = _Log(self)
        self.outbox = _Outbox(self)
        self._done = False
        self._view: _View | None = None

    @property
    def store(self) -> MemoryStore:
        return self._store

    @property
    def view(self) -> _View:
        """The committed rows as of this unit of work's first read (snapshot
        isolation, like REPEATABLE READ): every read sees one consistent state."""
        if self._view is None:
            store = self._store
            with store._lock:
                self._view = _View(
                    dict(store.sessions),
                    dict(store.payments),
                    dict(store.extensions),
                    dict(store._versions),
                )
        return self._view

    def touch(self, table: str, key: str) -> None:
        """Remember the version of a row this unit of work read or claimed."""
        self.seen.setdefault((table, key), self.view.versions.get((table, key), 0))

    def written(self) -> list[tuple[str, str]]:
        """The rows this unit of work writes (their versions move at commit)."""
        return [
            *(("session", k) for k in self.staged_sessions),
            *(("payment", k) for k in self.staged_payments),
            *(("extension", k) for k in self.staged_extensions),
        ]

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._done = True  # uncommitted staging is simply dropped

    async def commit(self) -> None:
        if self._done:
            raise RuntimeError("unit of work already finished")
        self._store._apply(self)
        self._done = True


class _Sessions:
    def __init__(self, uow: MemoryUnitOfWork) -> None:
        self._uow = uow

    async def get(self, session_id: str) -> Session | None:
        # A read joins the read set: a write derived from it must not commit if
        # the row moved since (status-only compare-and-set misses A-B-A moves).
        self._uow.touch("session", session_id)
        return self._uow.staged_sessions.get(session_id) or self._uow.view.sessions.get(session_id)

    async def update(self, session: Session, expected_status: str) -> bool:
        self._uow.touch("session", session.id)
        current = await self.get(session.id)
        if current is None or current.status.value != expected_status:
            return False
        self._uow.staged_sessions[session.id] = session
        return True


class _Payments:
    def __init__(self, uow: MemoryUnitOfWork) -> None:
        self._uow = uow

    async def get(self, payment_id: str) -> PaymentSession | None:
        self._uow.touch("payment", payment_id)
        return self._uow.staged_payments.get(payment_id) or self._uow.view.payments.get(payment_id)

    async def update(self, payment: PaymentSession, expected_status: str) -> bool:
        self._uow.touch("payment", payment.id)
        current = await self.get(payment.id)
        if current is None or current.status.value != expected_status:
            return False
        self._uow.staged_payments[payment.id] = payment
        return True


class _Extensions:
    def __init__(self, uow: MemoryUnitOfWork) -> None:
        self._uow = uow

    def _all(self) -> dict[str, Extension]:
        return {**self._uow.view.extensions, **self._uow.staged_extensions}

    async def get(self, extension_id: str) -> Extension | None:
        self._uow.touch("extension", extension_id)
        return self._all().get(extension_id)

    async def claim(self, extension_id: str) -> Extension | None:
        # Optimistic: the row is "taken" by touching it; a concurrent winner
        # makes this unit of work's commit fail, which is the same outcome.
        self._uow.touch("extension", extension_id)
        return await self.get(extension_id)

    async def add(self, extension: Extension) -> None:
        _check_unique(self._all(), extension)
        self._uow.touch("extension", extension.id)
        self._uow.staged_extensions[extension.id] = extension

    async def update(self, extension: Extension, expected_status: str) -> bool:
        self._uow.touch("extension", extension.id)
        current = await self.get(extension.id)
        if current is None or current.status.value != expected_status:
            return False
        self._uow.staged_extensions[extension.id] = extension
        return True

    async def pending_for_session(self, session_id: str) -> Extension | None:
        for ext in self._all().values():
            if ext.session_id == session_id and ext.status is ExtensionStatus.PENDING:
                return ext
        return None

    async def live_for_payment(self, payment_id: str) -> Extension | None:
        for ext in self._all().values():
            if ext.payment_session_id == payment_id and ext.status in _LIVE:
                return ext
        return None

    async def due(self, now: datetime, limit: int) -> list[str]:
        pending = [
            ext
            for ext in self._all().values()
            if ext.status is ExtensionStatus.PENDING and ext.expires_at <= now
        ]
        pending.sort(key=lambda e: (e.expires_at, e.id))
        return [ext.id for ext in pending[:limit]]


class _Ledger:
    def __init__(self, uow: MemoryUnitOfWork) -> None:
        self._uow = uow

    async def add(self, entry: LedgerEntry) -> None:
        self._uow.staged_ledger.append(entry)


class _Log:
    def __init__(self, uow: MemoryUnitOfWork) -> None:
        self._uow = uow

    async def add(self, records: Sequence[TransitionRecord]) -> None:
        self._uow.staged_log.extend(records)


class _Outbox:
    def __init__(self, uow: MemoryUnitOfWork) -> None:
        self._uow = uow

    async def add(self, messages: Sequence[OutboxMessage]) -> None:
        self._uow.staged_outbox.extend(messages)


class _MemoryOutboxStore:
    def __init__(self, store: MemoryStore) -> None:
        self._store = store

    async def claim(
        self, now: datetime, limit: int, lease_seconds: float, ids: Sequence[str] | None = None
    ) -> list[OutboxMessage]:
        with self._store._lock:
            rows = self._store.outbox_rows
            candidates = [rows[i] for i in ids if i in rows] if ids is not None else rows.values()
            ready = sorted(
                (
                    r
                    for r in candidates
                    if r.delivered_at is None and not r.dead and r.available_at <= now
                ),
                key=lambda r: r.seq,
            )[:limit]
            for row in ready:
                row.available_at = now + timedelta(seconds=lease_seconds)
            return [replace(r.message, attempts=r.attempts) for r in ready]

    async def mark_delivered(self, message_id: str, at: datetime) -> None:
        with self._store._lock:
            self._store.outbox_rows[message_id].delivered_at = at

    async def mark_retry(self, message_id: str, available_at: datetime, error: str) -> None:
        with self._store._lock:
            row = self._store.outbox_rows[message_id]
            row.attempts += 1
            row.available_at = available_at
            row.last_error = error

    async def mark_dead(self, message_id: str, at: datetime, error: str) -> None:
        with self._store._lock:
            row = self._store.outbox_rows[message_id]
            row.attempts += 1
            row.dead = True
            row.last_error = error

    def undelivered(self) -> list[OutboxMessage]:
        """Rows not yet delivered nor dead, in order (for tests and the simulator)."""
        rows = sorted(self._store.outbox_rows.values(), key=lambda r: r.seq)
        return [r.message for r in rows if r.delivered_at is None and not r.dead]


# ------------------------------------------------------------------ delivery


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message that reached (or failed to reach) someone."""

    channel: str  # "ws" | "push"
    participant: Participant
    user_id: str
    session_id: str | None
    payload: Mapping[str, JSONValue]
    taken: bool = True


@dataclass
class MemorySockets:
    """Session sockets as flags: who is on which session's socket, who is connected."""

    on_session: dict[tuple[str, Participant], bool] = field(default_factory=dict)
    connected: dict[tuple[Participant, str], bool] = field(default_factory=dict)
    sent: list[Delivery] = field(default_factory=list)

    async def send(
        self, session_id: str, participant: Participant, message: Mapping[str, JSONValue]
    ) -> bool:
        taken = self.on_session.get((session_id, participant), False)
        self.sent.append(Delivery("ws", participant, "", session_id, dict(message), taken))
        return taken

    async def is_connected(self, participant: Participant, user_id: str) -> bool:
        return self.connected.get((participant, user_id), False)


@dataclass
class MemoryPresence:
    """The mitra's online flag."""

    online: dict[str, bool] = field(default_factory=dict)

    async def is_online(self, mitra_id: str) -> bool:
        return self.online.get(mitra_id, False)


@dataclass
class MemoryPush:
    """Records pushes; ``failures`` are raised, one per send, before succeeding."""

    sent: list[Delivery] = field(default_factory=list)
    failures: list[DeliveryError] = field(default_factory=list)

    async def send(self, participant: Participant, user_id: str, message: PushMessage) -> None:
        if self.failures:
            raise self.failures.pop(0)
        payload: dict[str, JSONValue] = {
            "title": message.title,
            "body": message.body,
            "data": dict(message.data),
        }
        self.sent.append(Delivery("push", participant, user_id, None, payload))


@dataclass
class MemoryDeviceTokens:
    """Device tokens per user."""

    by_user: dict[tuple[Participant, str], list[str]] = field(default_factory=dict)

    async def tokens(self, participant: Participant, user_id: str) -> Sequence[str]:
        return list(self.by_user.get((participant, user_id), []))

    async def remove(self, token: str) -> None:
        for tokens in self.by_user.values():
            if token in tokens:
                tokens.remove(token)


@dataclass
class MemorySessionTimer:
    """Records what the host's session timer was told."""

    calls: list[tuple[str, str, datetime | None]] = field(default_factory=list)

    async def expiry_extended(self, session_id: str, expires_at: datetime) -> None:
        self.calls.append(("expiry_extended", session_id, expires_at))

    async def start_closure_grace(self, session_id: str, deadline: datetime) -> None:
        self.calls.append(("start_closure_grace", session_id, deadline))

    async def clear_closure_grace(self, session_id: str) -> None:
        self.calls.append(("clear_closure_grace", session_id, None))


@dataclass
class MemoryConfig:
    """Configuration you can change between calls."""

    timeout_seconds: int = 10
    timeout_action: TimeoutAction | str = TimeoutAction.AUTO_APPROVE
    grace_seconds: int = 60

    async def extension_timeout_seconds(self) -> int:
        return self.timeout_seconds

    async def extension_timeout_action(self) -> TimeoutAction | str:
        return self.timeout_action

    async def closure_grace_seconds(self) -> int:
        return self.grace_seconds
