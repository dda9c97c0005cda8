"""The unit of work's repositories: one table's reads and writes each.

The reads run the store's prebuilt statements (:mod:`.statements`) through
the unit of work's ``first``/``rows``; the writes are compare-and-set
``UPDATE``\\s (:meth:`SqlUnitOfWork.compare_and_set`) and ``INSERT``\\s.  The
same classes serve the SQLAlchemy path and the direct PostgreSQL path
(:mod:`.pg_direct`): only how the unit of work runs a statement differs.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Select, or_, select, update

from ...model import (
    Extension,
    LedgerEntry,
    PaymentSession,
    Session,
    TransitionRecord,
    set_aside_delay,
)
from ...ports import OutboxMessage
from .rows import (
    _extension,
    _extension_values,
    _ledger_values,
    _outbox_values,
    _payment,
    _payment_values,
    _record_values,
    _session,
    _session_values,
)
from .statements import PENDING

if TYPE_CHECKING:
    from .unit import SqlUnitOfWork

__all__ = ["Extensions", "Ledger", "Log", "Outbox", "Payments", "Sessions"]


class Sessions:
    def __init__(self, uow: SqlUnitOfWork) -> None:
        self._uow = uow

    async def get(self, session_id: str) -> Session | None:
        row = await self._uow.first(self._uow.statements.session_by_id, {"key": session_id})
        return _session(row) if row is not None else None

    async def update(self, session: Session, expected_status: str) -> bool:
        values = _session_values(session)
        del values["id"]
        return await self._uow.compare_and_set(
            self._uow.tables.sessions, session.id, expected_status, values
        )


class Payments:
    def __init__(self, uow: SqlUnitOfWork) -> None:
        self._uow = uow

    async def get(self, payment_id: str) -> PaymentSession | None:
        row = await self._uow.first(self._uow.statements.payment_by_id, {"key": payment_id})
        return _payment(row) if row is not None else None

    async def update(self, payment: PaymentSession, expected_status: str) -> bool:
        values = _payment_values(payment)
        del values["id"]
        return await self._uow.compare_and_set(
            self._uow.tables.payments, payment.id, expected_status, values
        )


class Extensions:
    def __init__(self, uow: SqlUnitOfWork) -> None:
        self._uow = uow
        self._t = uow.tables.extensions

    async def _one(self, stmt: Select[Any], key: str) -> Extension | None:
        row = await self._uow.first(stmt, {"key": key})
        return _extension(row) if row is not None else None

    async def get(self, extension_id: str) -> Extension | None:
        return await self._one(self._uow.statements.extension_by_id, extension_id)

    async def claim(self, extension_id: str) -> Extension | None:
        s = self._uow.statements
        # On SQLite the unit of work already holds the database's one write lock.
        stmt = s.extension_claim_pg if self._uow.is_postgres else s.extension_by_id
        return await self._one(stmt, extension_id)

    async def add(self, extension: Extension) -> None:
        await self._uow.execute(self._uow.statements.insert_extension, _extension_values(extension))

    async def update(self, extension: Extension, expected_status: str) -> bool:
        values = _extension_values(extension)
        del values["id"]
        return await self._uow.compare_and_set(self._t, extension.id, expected_status, values)

    async def pending_for_session(self, session_id: str) -> Extension | None:
        return await self._one(self._uow.statements.pending_for_session, session_id)

    async def live_for_payment(self, payment_id: str) -> Extension | None:
        return await self._one(self._uow.statements.live_for_payment, payment_id)

    async def due(self, now: datetime, limit: int) -> list[str]:
        t = self._t
        stmt = (
            select(t.c.id)
            .where(
                t.c.status == PENDING,
                t.c.expires_at <= now,
                or_(t.c.set_aside_until.is_(None), t.c.set_aside_until <= now),
            )
            .order_by(t.c.expires_at, t.c.id)
            .limit(limit)
        )
        # A plain read on purpose: under REPEATABLE READ a ``FOR UPDATE`` here
        # fails with a serialization error whenever a row moved since the
        # snapshot, and the service does not retry this read.  ``claim``
        # (``FOR UPDATE SKIP LOCKED``) is what keeps two sweepers apart.
        return [row.id for row in await self._uow.rows(stmt)]

    async def set_aside(self, extension_id: str, now: datetime, reason: str) -> int:
        t = self._t
        row = await self._uow.first(
            select(t.c.set_aside_count).where(t.c.id == extension_id, t.c.status == PENDING)
        )
        if row is None:
            return 0
        times = int(row[0] or 0) + 1
        await self._uow.execute(
            update(t)
            .where(t.c.id == extension_id, t.c.status == PENDING)
            .values(
                set_aside_until=now + set_aside_delay(times),
                set_aside_count=times,
                set_aside_reason=reason[:2000],
            )
        )
        return times


class Ledger:
    def __init__(self, uow: SqlUnitOfWork) -> None:
        self._uow = uow

    async def add(self, entry: LedgerEntry) -> None:
        await self._uow.execute(self._uow.statements.insert_ledger, _ledger_values(entry))


class Log:
    def __init__(self, uow: SqlUnitOfWork) -> None:
        self._uow = uow

    async def add(self, records: Sequence[TransitionRecord]) -> None:
        if not records:
            return
        rows = [_record_values(r) for r in records]
        await self._uow.execute(self._uow.statements.insert_log, rows)


class Outbox:
    def __init__(self, uow: SqlUnitOfWork) -> None:
        self._uow = uow

    async def add(self, messages: Sequence[OutboxMessage]) -> None:
        if not messages:
            return
        rows = [_outbox_values(m) for m in messages]
        await self._uow.execute(self._uow.statements.insert_outbox, rows)
