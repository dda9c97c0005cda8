"""The memory store's unit of work and its repositories (see :mod:`.memory`
for the transaction model)."""

from __future__ import annotations

import heapq
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Self

from ..errors import ConcurrencyConflict, ErrorCode, ExtensionError
from ..model import (
    Extension,
    ExtensionStatus,
    LedgerEntry,
    PaymentSession,
    Session,
    TransitionRecord,
    set_aside_delay,
)
from ..ports import OutboxMessage
from .rowwise import RowSnapshots, RowWriter

if TYPE_CHECKING:
    from .memory import MemoryStore

__all__ = ["MemoryUnitOfWork"]

LIVE = (ExtensionStatus.PENDING, ExtensionStatus.ACCEPTED)
# The keys a unit of work reads and a commit stamps: rows, and index entries.
SESSION = "session"
PAYMENT = "payment"
EXTENSION = "extension"
PENDING = "pending@session"
LIVE_PAYMENT = "live@payment"


class MemoryUnitOfWork:
    """One optimistic transaction over a :class:`MemoryStore`.

    Reads are validated against a snapshot epoch taken at the first read: a row
    (or index entry) written by a commit after it makes the read raise
    ``ConcurrencyConflict`` at once, and the commit re-checks every row read.
    So every read sees one consistent state (like REPEATABLE READ) and a write
    derived from a stale read never commits.
    """

    def __init__(self, store: MemoryStore) -> None:
        self._store = store
        self.snapshot: int | None = None
        self.reads: set[tuple[str, str]] = set()
        self.staged_sessions: dict[str, Session] = {}
        self.staged_payments: dict[str, PaymentSession] = {}
        self.staged_extensions: dict[str, Extension] = {}
        self.staged_ledger: list[LedgerEntry] = []
        self.staged_log: list[TransitionRecord] = []
        self.staged_outbox: list[OutboxMessage] = []
        self.staged_set_aside: dict[str, tuple[datetime, int, str]] = {}
        self.sessions = _Sessions(self)
        self.payments = _Payments(self)
        self.extensions = _Extensions(self)
        self.ledger = _Ledger(self)
        self.log = _Log(self)
        self.outbox = _Outbox(self)
        #: the port: the joined reads and the decision write, through the
        #: repositories above (this store's own, not part of the port)
        self.snapshots = RowSnapshots(self)
        self.write_batch = RowWriter(self)
        self._done = False
        self._released = False
        self._entered = False

    @property
    def store(self) -> MemoryStore:
        return self._store

    def read(self, table: str, key: str) -> None:
        """Join ``table``/``key`` to the read set; raise if it moved since the snapshot."""
        if self.snapshot is None:
            self.snapshot = self._store._snapshot()
        elif self._store.changed_at(table, key) > self.snapshot:
            raise ConcurrencyConflict(f"{table} {key} changed since this unit of work began")
        self.reads.add((table, key))

    async def set_aside(self, extension_id: str, now: datetime, reason: str) -> int:
        """Set a pending extension the sweep could not decide aside (see the port)."""
        return await self.extensions.set_aside(extension_id, now, reason)

    async def __aenter__(self) -> Self:
        if not self._entered:
            self._entered = True
            self._store.open_units += 1
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._done = True  # uncommitted staging is simply dropped
        self._close_snapshot()
        if self._entered:
            self._entered = False
            self._store.open_units -= 1

    async def commit(self) -> None:
        if self._done:
            raise RuntimeError("unit of work already finished")
        try:
            self._store._apply(self)
        finally:
            self._done = True
            self._close_snapshot()

    def _close_snapshot(self) -> None:
        if self.snapshot is not None and not self._released:
            self._released = True
            self._store._release(self.snapshot)


class _Sessions:
    def __init__(self, uow: MemoryUnitOfWork) -> None:
        self._uow = uow

    async def get(self, session_id: str) -> Session | None:
        if session_id in self._uow.staged_sessions:
            return self._uow.staged_sessions[session_id]
        self._uow.read(SESSION, session_id)
        return self._uow.store.sessions.get(session_id)

    async def update(self, session: Session, expected_status: str) -> bool:
        current = await self.get(session.id)
        if current is None or current.status.value != expected_status:
            return False
        self._uow.staged_sessions[session.id] = session
        return True


class _Payments:
    def __init__(self, uow: MemoryUnitOfWork) -> None:
        self._uow = uow

    async def get(self, payment_id: str) -> PaymentSession | None:
        if payment_id in self._uow.staged_payments:
            return self._uow.staged_payments[payment_id]
        self._uow.read(PAYMENT, payment_id)
        return self._uow.store.payments.get(payment_id)

    async def update(self, payment: PaymentSession, expected_status: str) -> bool:
        current = await self.get(payment.id)
        if current is None or current.status.value != expected_status:
            return False
        self._uow.staged_payments[payment.id] = payment
        return True


class _Extensions:
    def __init__(self, uow: MemoryUnitOfWork) -> None:
        self._uow = uow

    async def get(self, extension_id: str) -> Extension | None:
        staged = self._uow.staged_extensions
        if extension_id in staged:
            return staged[extension_id]
        self._uow.read(EXTENSION, extension_id)
        return self._uow.store.extensions.get(extension_id)

    async def claim(self, extension_id: str) -> Extension | None:
        # Optimistic: the row joins the read set; a concurrent winner makes this
        # unit of work's commit fail, which is the same outcome as skipping it.
        return await self.get(extension_id)

    async def add(self, extension: Extension) -> None:
        pending = extension.status is ExtensionStatus.PENDING
        if pending and await self.pending_for_session(extension.session_id) is not None:
            raise ExtensionError(
                ErrorCode.EXTENSION_PENDING, "An extension request is already pending"
            )
        live = extension.status in LIVE
        if live and await self.live_for_payment(extension.payment_session_id) is not None:
            raise ExtensionError(
                ErrorCode.PAYMENT_IN_USE, "Payment session already backs another extension"
            )
        self._uow.read(EXTENSION, extension.id)
        self._uow.staged_extensions[extension.id] = extension

    async def update(self, extension: Extension, expected_status: str) -> bool:
        current = await self.get(extension.id)
        if current is None or current.status.value != expected_status:
            return False
        self._uow.staged_extensions[extension.id] = extension
        return True

    async def _indexed(
        self, index: Mapping[str, str], table: str, group: str, match: Callable[[Extension], bool]
    ) -> Extension | None:
        self._uow.read(table, group)
        for ext in self._uow.staged_extensions.values():
            if match(ext):
                return ext
        key = index.get(group)
        if key is None or key in self._uow.staged_extensions:
            return None  # none committed, or this unit of work moved it
        return await self.get(key)

    async def pending_for_session(self, session_id: str) -> Extension | None:
        return await self._indexed(
            self._uow.store._pending_by_session,
            PENDING,
            session_id,
            lambda e: e.session_id == session_id and e.status is ExtensionStatus.PENDING,
        )

    async def live_for_payment(self, payment_id: str) -> Extension | None:
        return await self._indexed(
            self._uow.store._live_by_payment,
            LIVE_PAYMENT,
            payment_id,
            lambda e: e.payment_session_id == payment_id and e.status in LIVE,
        )

    async def due(self, now: datetime, limit: int) -> list[str]:
        # A candidate list, not a read: ``claim`` is what validates a row.
        store = self._uow.store
        rows = {key: store.extensions[key] for key in store.pending_ids()}
        rows.update(self._uow.staged_extensions)
        aside = store.set_aside
        due = (
            e
            for e in rows.values()
            if e.status is ExtensionStatus.PENDING
            and e.expires_at <= now
            and (e.id not in aside or aside[e.id][0] <= now)
        )
        return [e.id for e in heapq.nsmallest(limit, due, key=lambda e: (e.expires_at, e.id))]

    async def set_aside(self, extension_id: str, now: datetime, reason: str) -> int:
        ext = await self.get(extension_id)
        if ext is None or ext.status is not ExtensionStatus.PENDING:
            return 0
        staged = self._uow.staged_set_aside.get(extension_id)
        before = staged or self._uow.store.set_aside.get(extension_id)
        times = (before[1] if before else 0) + 1
        self._uow.staged_set_aside[extension_id] = (now + set_aside_delay(times), times, reason)
        return times


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
