"""The unit of work's repositories: one table's reads and writes each, this
adapter's own (its tests and tooling reach rows through them); the service
and the test kit use only the port's reads and decision write.

The reads run the store's prebuilt statements (:class:`~.statements.Statements`)
through the unit of work; the writes are the one compare-and-set
(:func:`~.statements.compare_and_set`, only the changed columns) and plain
``INSERT``\\s.  Every row read is remembered by the unit of work, so that a
write of it changes only what the decision changed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Row, insert

from ...model import Extension, LedgerEntry, PaymentSession, Session, TransitionRecord
from ...ports import OutboxMessage
from .rows import _extension, _ledger_values, _outbox_values, _payment, _record_values, _session

if TYPE_CHECKING:
    from .unit import SqlUnitOfWork

__all__ = ["Extensions", "Ledger", "Log", "Outbox", "Payments", "Sessions"]


class _Rows:
    def __init__(self, uow: SqlUnitOfWork) -> None:
        self._uow = uow
        self._s = uow.statements

    async def _one(self, stmt: Any, key: str, make: Callable[[Any], Any]) -> Any:
        row: Row[Any] | None = await self._uow.run(self._s.first(stmt, key))
        return None if row is None else self._uow.remember(make(row))


class Sessions(_Rows):
    async def get(self, session_id: str) -> Session | None:
        return await self._one(self._s.session_by_id, session_id, _session)  # type: ignore[no-any-return]

    async def update(self, session: Session, expected_status: str) -> bool:
        return await self._uow.compare_and_set(session, expected_status)


class Payments(_Rows):
    async def get(self, payment_id: str) -> PaymentSession | None:
        return await self._one(self._s.payment_by_id, payment_id, _payment)  # type: ignore[no-any-return]

    async def update(self, payment: PaymentSession, expected_status: str) -> bool:
        return await self._uow.compare_and_set(payment, expected_status)


class Extensions(_Rows):
    async def get(self, extension_id: str) -> Extension | None:
        return await self._one(self._s.extension_by_id, extension_id, _extension)  # type: ignore[no-any-return]

    async def claim(self, extension_id: str) -> Extension | None:
        return await self._one(self._s.extension_claim, extension_id, _extension)  # type: ignore[no-any-return]

    async def add(self, extension: Extension) -> None:
        await self._uow.insert(extension)

    async def update(self, extension: Extension, expected_status: str) -> bool:
        return await self._uow.compare_and_set(extension, expected_status)

    async def pending_for_session(self, session_id: str) -> Extension | None:
        return await self._one(self._s.pending_for_session, session_id, _extension)  # type: ignore[no-any-return]

    async def live_for_payment(self, payment_id: str) -> Extension | None:
        return await self._one(self._s.live_for_payment, payment_id, _extension)  # type: ignore[no-any-return]

    async def due(self, now: datetime, limit: int) -> list[str]:
        return await self._uow.run(self._s.due(now, limit))

    async def set_aside(self, extension_id: str, now: datetime, reason: str) -> int:
        return await self._uow.set_aside(extension_id, now, reason)


def _insert(table: Any, rows: list[dict[str, Any]]) -> Callable[[Connection], None]:
    def write(conn: Connection) -> None:
        conn.execute(insert(table), rows)

    return write


class Ledger(_Rows):
    async def add(self, entry: LedgerEntry) -> None:
        await self._uow.run(_insert(self._uow.tables.ledger, [_ledger_values(entry)]))


class Log(_Rows):
    async def add(self, records: Sequence[TransitionRecord]) -> None:
        if records:
            rows = [_record_values(r) for r in records]
            await self._uow.run(_insert(self._uow.tables.log, rows))


class Outbox(_Rows):
    async def add(self, messages: Sequence[OutboxMessage]) -> None:
        if messages:
            rows = [_outbox_values(m) for m in messages]
            await self._uow.run(_insert(self._uow.tables.outbox, rows))
