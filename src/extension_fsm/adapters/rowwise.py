"""A store built row by row: the per-table repositories such a store keeps
to itself, and the unit of work's joined reads (:class:`RowSnapshots`) and
decision write (:class:`RowWriter`) done through them.

Repositories are not part of the ports: the service and the test kit see a
unit of work only through its reads, its decision write and its set-aside
(:class:`~extension_fsm.ports.UnitOfWork`).  A store whose reads cost nothing
(the memory store) needs no more than this module; a database store offers
statements that do the same in one round trip (the SQL store).  Both helpers
read the repositories lazily, so a unit of work whose repositories are
wrapped (tests that pause or gate each call) is read through its wrappers.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Protocol

from ..core import Change, Snapshot, Undecidable
from ..errors import ConcurrencyConflict
from ..model import (
    Extension,
    ExtensionStatus,
    LedgerEntry,
    PaymentSession,
    Session,
    TransitionRecord,
)
from ..ports import OutboxMessage

__all__ = [
    "AuditLog",
    "ExtensionRepository",
    "LedgerRepository",
    "OutboxRepository",
    "PaymentRepository",
    "RowSnapshots",
    "RowWriter",
    "Rows",
    "SessionRepository",
]


class SessionRepository(Protocol):
    """The host's chat sessions."""

    async def get(self, session_id: str) -> Session | None: ...

    async def update(self, session: Session, expected_status: str) -> bool:
        """Write ``session`` if its stored status is ``expected_status``; say whether it was."""
        ...


class PaymentRepository(Protocol):
    """The host's payment sessions."""

    async def get(self, payment_id: str) -> PaymentSession | None: ...

    async def update(self, payment: PaymentSession, expected_status: str) -> bool: ...


class ExtensionRepository(Protocol):
    """Extension rows; uniqueness is the storage's job, not the caller's."""

    async def get(self, extension_id: str) -> Extension | None: ...

    async def add(self, extension: Extension) -> None:
        """Insert; raise ``ExtensionError`` ``EXTENSION_PENDING`` or ``PAYMENT_IN_USE``
        (409) when a pending one exists for the session or a live one for the payment."""
        ...

    async def update(self, extension: Extension, expected_status: str) -> bool: ...

    async def pending_for_session(self, session_id: str) -> Extension | None: ...

    async def live_for_payment(self, payment_id: str) -> Extension | None:
        """A pending or accepted extension backed by this payment session."""
        ...

    async def due(self, now: datetime, limit: int) -> list[str]:
        """Ids of pending extensions whose deadline is at or before ``now``, oldest
        first, leaving out rows set aside until after ``now``."""
        ...

    async def set_aside(self, extension_id: str, now: datetime, reason: str) -> int:
        """As :meth:`extension_fsm.ports.UnitOfWork.set_aside`."""
        ...

    async def claim(self, extension_id: str) -> Extension | None:
        """The extension, locked for this unit of work; ``None`` if another
        worker holds it (skip) or it does not exist."""
        ...


class LedgerRepository(Protocol):
    """The host's ``customer_transactions``."""

    async def add(self, entry: LedgerEntry) -> None: ...


class AuditLog(Protocol):
    """Every state change, for people reading what happened."""

    async def add(self, records: Sequence[TransitionRecord]) -> None: ...


class OutboxRepository(Protocol):
    """The outbox inside a unit of work."""

    async def add(self, messages: Sequence[OutboxMessage]) -> None: ...


class Rows(Protocol):
    """The repositories of one unit of work (a row-by-row store's own)."""

    @property
    def sessions(self) -> SessionRepository: ...

    @property
    def payments(self) -> PaymentRepository: ...

    @property
    def extensions(self) -> ExtensionRepository: ...

    @property
    def ledger(self) -> LedgerRepository: ...

    @property
    def log(self) -> AuditLog: ...

    @property
    def outbox(self) -> OutboxRepository: ...


class RowSnapshots:
    """:class:`~extension_fsm.ports.SnapshotLoader` through ``uow``'s repositories."""

    def __init__(self, uow: Rows) -> None:
        self._uow = uow

    async def for_request(self, session_id: str, payment_id: str | None) -> Snapshot:
        uow = self._uow
        payment = live = None
        if payment_id:
            payment = await uow.payments.get(payment_id)
            live = await uow.extensions.live_for_payment(payment_id)
        session = await uow.sessions.get(session_id)
        if session is None:
            return Snapshot(session=None)
        return Snapshot(
            session=session,
            payment=payment,
            pending=await uow.extensions.pending_for_session(session_id),
            payment_live=live,
        )

    async def for_response(self, session_id: str, extension_id: str) -> Snapshot:
        uow = self._uow
        session = await uow.sessions.get(session_id)
        if session is None:
            return Snapshot(session=None)
        ext = await uow.extensions.get(extension_id)
        payment = None
        if ext is not None:
            payment = await uow.payments.get(ext.payment_session_id)
            # Extension and payment move in one commit; if the extension is
            # unchanged after the payment was read, the two reads agree (READ
            # COMMITTED could otherwise pair a pending extension with a payment
            # its resolution already failed).
            if await uow.extensions.get(extension_id) != ext:
                raise ConcurrencyConflict(f"extension {extension_id} moved while loading")
        return Snapshot(session=session, extension=ext, payment=payment)

    async def for_end(self, session_id: str) -> Snapshot:
        uow = self._uow
        pending = await uow.extensions.pending_for_session(session_id)
        if pending is not None:
            claimed = await uow.extensions.claim(pending.id)
            if claimed is not None and claimed.status is not ExtensionStatus.PENDING:
                # Resolved between the look-up and the lock (READ COMMITTED):
                # start over on fresh rows rather than cancel a final extension.
                raise ConcurrencyConflict(f"extension {pending.id} resolved meanwhile")
            pending = claimed or pending
        session = await uow.sessions.get(session_id)
        if session is None:
            return Snapshot(session=None)
        payment = await uow.payments.get(pending.payment_session_id) if pending else None
        return Snapshot(session=session, pending=pending, payment=payment)

    async def for_timeout(self, extension_id: str) -> Snapshot:
        uow = self._uow
        ext = await uow.extensions.claim(extension_id)
        if ext is None or ext.status is not ExtensionStatus.PENDING:
            return Snapshot(session=None)  # resolved already: nothing more to read
        return Snapshot(
            session=await uow.sessions.get(ext.session_id),
            extension=ext,
            payment=await uow.payments.get(ext.payment_session_id),
        )

    async def for_due(
        self, now: datetime, limit: int, mitras: Collection[str] | None = None
    ) -> list[Snapshot | Undecidable]:
        due: list[Snapshot | Undecidable] = []
        for extension_id in await self._uow.extensions.due(now, limit):
            snapshot = await self.for_timeout(extension_id)
            if snapshot.extension is None:
                continue
            session = snapshot.session
            if mitras is not None and session is not None and session.mitra_id not in mitras:
                continue  # another mitra's: not asked about (a gone session needs no one)
            due.append(snapshot)
        return due

    async def mitras_due(self, now: datetime, limit: int) -> set[str]:
        uow = self._uow
        mitras: set[str] = set()
        for extension_id in await uow.extensions.due(now, limit):
            ext = await uow.extensions.get(extension_id)
            session = await uow.sessions.get(ext.session_id) if ext is not None else None
            if session is not None:
                mitras.add(session.mitra_id)
        return mitras

    async def due_ids(self, now: datetime, limit: int) -> list[str]:
        return await self._uow.extensions.due(now, limit)


class RowWriter:
    """:class:`~extension_fsm.ports.DecisionWriter` through ``uow``'s repositories.

    Lock order as everywhere: extension, session, payment (no deadlocks); a
    compare-and-set that matches nothing raises ``ConcurrencyConflict``."""

    def __init__(self, uow: Rows) -> None:
        self._uow = uow

    async def __call__(
        self,
        extension: Change[Extension] | None,
        session: Change[Session] | None,
        payment: Change[PaymentSession] | None,
        ledger: LedgerEntry | None,
        log: Sequence[TransitionRecord],
        outbox: Sequence[OutboxMessage],
    ) -> None:
        uow = self._uow
        if extension is not None:
            if extension.expected is None:
                await uow.extensions.add(extension.row)
            elif not await uow.extensions.update(extension.row, extension.expected):
                raise ConcurrencyConflict(f"extension {extension.row.id} moved")
        if session is not None and not await uow.sessions.update(
            session.row, session.expected or ""
        ):
            raise ConcurrencyConflict(f"session {session.row.id} moved")
        if payment is not None and not await uow.payments.update(
            payment.row, payment.expected or ""
        ):
            raise ConcurrencyConflict(f"payment {payment.row.id} moved")
        if ledger is not None:
            await uow.ledger.add(ledger)
        if log:
            await uow.log.add(log)
        if outbox:
            await uow.outbox.add(outbox)
