"""Deliberately broken host stores, each with the store contract on it; run by
test_kit_catches_broken_hosts.py in a pytest process of its own (the name does
not start with ``test_``, so the suite never collects these on its own).

- ``TestCompareAndSetIgnored``: a decision write that ignores the expected
  status (its row updates always write and return True).
- ``TestPendingIndexMissing``: SQLite tables without the "one pending extension
  per session" unique index.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from types import TracebackType
from typing import Any

from extension_fsm.adapters.memory import MemoryStore
from extension_fsm.adapters.rowwise import RowWriter
from extension_fsm.adapters.sqlalchemy import SqlAlchemyStore
from extension_fsm.ports import InspectableStore, StoreDump
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


class _UnitOfWork:
    """The memory store's unit of work whose decision write goes through
    repositories that ignore the expected status."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.sessions = _AlwaysWrites(inner.sessions)
        self.payments = _AlwaysWrites(inner.payments)
        self.extensions = _AlwaysWrites(inner.extensions)
        self.ledger, self.log, self.outbox = inner.ledger, inner.log, inner.outbox
        self.write_batch = RowWriter(self)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def __aenter__(self) -> _UnitOfWork:
        await self._inner.__aenter__()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._inner.__aexit__(kind, exc, tb)


class CompareAndSetIgnored:
    """A memory store behind repositories that write whatever the status is."""

    def __init__(self) -> None:
        self.inner = MemoryStore()
        self.outbox = self.inner.outbox
        self.seed_session = self.inner.seed_session
        self.seed_payment = self.inner.seed_payment

    def unit_of_work(self) -> Any:
        return _UnitOfWork(self.inner.unit_of_work())

    async def dump(self) -> StoreDump:
        return await self.inner.dump()


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


class TestCompareAndSetIgnored(StoreContract):
    async def make_store(self, tmp_path: Path) -> InspectableStore:
        return CompareAndSetIgnored()  # type: ignore[return-value]  # (duck-typed)


class TestPendingIndexMissing(StoreContract):
    async def make_store(self, tmp_path: Path) -> InspectableStore:
        return await without_pending_index(tmp_path / "broken.db")
