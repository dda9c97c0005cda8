"""Deliberately broken host stores, each with the store contract on it; run by
test_kit_catches_broken_hosts.py in a pytest process of its own (the name does
not start with ``test_``, so the suite never collects these on its own).

- ``TestCompareAndSetIgnored``: a decision write that ignores the expected
  status (its row updates always write and return True).
- ``TestPendingIndexMissing``: SQLite tables without the "one pending extension
  per session" unique index.
- ``TestSessionStatusOnly``: a decision write that updates a session's status
  column alone (an accept's new expiry, an ending's deadline are lost).
- ``TestSetAsideCountedOnce``: a set-aside that never counts past 1 (the delay
  never grows).
- ``TestPendingWithoutStatus``: ``for_end`` reads the session's latest
  extension as its pending one, whatever its status.
- ``TestClaimsUnaskedMitras``: ``for_due`` claims every due row, then drops
  those of mitras not asked (they wait out the claim unswept).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any

from extension_fsm.adapters.memory import MemoryStore, MemoryUnitOfWork
from extension_fsm.adapters.rowwise import RowWriter
from extension_fsm.adapters.sqlalchemy import SqlAlchemyStore
from extension_fsm.core import Change, Snapshot, Undecidable
from extension_fsm.model import Session, set_aside_delay
from extension_fsm.ports import InspectableStore
from extension_fsm.testing import StoreContract


class _AlwaysWrites:
    """A repository whose ``update`` ignores the expected status."""

    def __init__(self, repo: Any) -> None:
        self._repo = repo

    def __getattr__(self, name: str) -> Any:
        return getattr(self._repo, name)

    async def update(self, row: Any, expected_status: str) -> bool:
        current = await self._repo.get(row.id)
        await self._repo.update(row, current.status.value if current else expected_status)
        return True


async def without_pending_index(path: Path) -> InspectableStore:
    """A SQLite store whose tables lack the one-pending-per-session index."""
    url = f"sqlite:///{path}"
    made = await SqlAlchemyStore.open(url, create_schema=True)
    index = made.tables.pending_session_index
    await made.aclose()
    with sqlite3.connect(path) as db:
        db.execute(f'DROP INDEX "{index}"')
    db.close()
    return await SqlAlchemyStore.open(url)


class _Forwarding:
    """A memory unit of work seen through the port alone; a broken host below
    changes one call of it."""

    def __init__(self, inner: MemoryUnitOfWork) -> None:
        self.inner = inner
        self.snapshots: Any = inner.snapshots
        self.write_batch: Any = inner.write_batch

    async def set_aside(self, extension_id: str, now: datetime, reason: str) -> int:
        return await self.inner.set_aside(extension_id, now, reason)

    async def commit(self) -> None:
        await self.inner.commit()

    async def __aenter__(self) -> Any:
        await self.inner.__aenter__()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.inner.__aexit__(kind, exc, tb)


class _CompareAndSetIgnored(_Forwarding):
    """The decision write through repositories that ignore the expected status."""

    def __init__(self, inner: MemoryUnitOfWork) -> None:
        super().__init__(inner)
        self.sessions = _AlwaysWrites(inner.sessions)
        self.payments = _AlwaysWrites(inner.payments)
        self.extensions = _AlwaysWrites(inner.extensions)
        self.ledger, self.log, self.outbox = inner.ledger, inner.log, inner.outbox
        self.write_batch = RowWriter(self)


class _SessionStatusOnly(_Forwarding):
    """``UPDATE sessions SET status = :status WHERE id = :id AND status = :expected``."""

    def __init__(self, inner: MemoryUnitOfWork) -> None:
        super().__init__(inner)
        self.write_batch = self._write

    async def _write(
        self,
        extension: Any,
        session: Change[Session] | None,
        payment: Any,
        ledger: Any,
        log: Sequence[Any],
        outbox: Sequence[Any],
    ) -> None:
        if session is not None:
            stored = await self.inner.sessions.get(session.row.id)
            if stored is not None:
                session = Change(session.expected, replace(stored, status=session.row.status))
        await self.inner.write_batch(extension, session, payment, ledger, log, outbox)


class _SetAsideCountedOnce(_Forwarding):
    """``set_aside_count = 1`` where ``set_aside_count + 1`` was meant."""

    async def set_aside(self, extension_id: str, now: datetime, reason: str) -> int:
        if not await self.inner.set_aside(extension_id, now, reason):
            return 0
        self.inner.staged_set_aside[extension_id] = (now + set_aside_delay(1), 1, reason)
        return 1


class _LatestAsPending:
    """``for_end``'s pending extension: the session's latest, whatever its status."""

    def __init__(self, inner: MemoryUnitOfWork) -> None:
        self._uow = inner
        self._snapshots = inner.snapshots

    def __getattr__(self, name: str) -> Any:
        return getattr(self._snapshots, name)

    async def for_end(self, session_id: str) -> Snapshot:
        got = await self._snapshots.for_end(session_id)
        mine = [e for e in self._uow.store.extensions.values() if e.session_id == session_id]
        if got.session is None or got.pending is not None or not mine:
            return got
        latest = max(mine, key=lambda e: e.requested_at)
        payment = await self._uow.payments.get(latest.payment_session_id)
        return replace(got, pending=latest, payment=payment)


class _PendingWithoutStatus(_Forwarding):
    def __init__(self, inner: MemoryUnitOfWork) -> None:
        super().__init__(inner)
        self.snapshots = _LatestAsPending(inner)


class _ClaimEveryDueRow:
    """``for_due``: lease every due row, then drop those of mitras not asked."""

    def __init__(self, inner: MemoryUnitOfWork) -> None:
        self._uow = inner
        self._snapshots = inner.snapshots

    def __getattr__(self, name: str) -> Any:
        return getattr(self._snapshots, name)

    async def for_due(
        self, now: datetime, limit: int, mitras: Collection[str] | None = None
    ) -> list[Snapshot | Undecidable]:
        batch: list[Snapshot | Undecidable] = []
        for extension_id in await self._snapshots.due_ids(now, limit):
            lease = (now + timedelta(minutes=1), 0, "claimed")
            self._uow.staged_set_aside[extension_id] = lease
            got = await self._snapshots.for_timeout(extension_id)
            if mitras is None or got.session is None or got.session.mitra_id in mitras:
                batch.append(got)
        return batch


class _ClaimsUnaskedMitras(_Forwarding):
    def __init__(self, inner: MemoryUnitOfWork) -> None:
        super().__init__(inner)
        self.snapshots = _ClaimEveryDueRow(inner)


class _OneBug(MemoryStore):
    """A memory store whose units of work are ``unit`` (one bug each)."""

    def __init__(self, unit: type[_Forwarding]) -> None:
        super().__init__()
        self._unit = unit

    def unit_of_work(self) -> Any:
        return self._unit(super().unit_of_work())


class TestCompareAndSetIgnored(StoreContract):
    async def make_store(self, tmp_path: Path) -> InspectableStore:
        return _OneBug(_CompareAndSetIgnored)


class TestPendingIndexMissing(StoreContract):
    async def make_store(self, tmp_path: Path) -> InspectableStore:
        return await without_pending_index(tmp_path / "broken.db")


class TestSessionStatusOnly(StoreContract):
    async def make_store(self, tmp_path: Path) -> InspectableStore:
        return _OneBug(_SessionStatusOnly)


class TestSetAsideCountedOnce(StoreContract):
    async def make_store(self, tmp_path: Path) -> InspectableStore:
        return _OneBug(_SetAsideCountedOnce)


class TestPendingWithoutStatus(StoreContract):
    async def make_store(self, tmp_path: Path) -> InspectableStore:
        return _OneBug(_PendingWithoutStatus)


class TestClaimsUnaskedMitras(StoreContract):
    async def make_store(self, tmp_path: Path) -> InspectableStore:
        return _OneBug(_ClaimsUnaskedMitras)
