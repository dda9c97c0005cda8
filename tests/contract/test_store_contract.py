"""The store contract (``extension_fsm.testing.StoreContract``) on every store of
the library, used exactly as a host uses it: in memory, SQLite (file,
``sqlite://`` and the ``+aiosqlite`` driver) and PostgreSQL (on asyncpg
directly, the default, and through SQLAlchemy's engine with ``direct=False``)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from extension_fsm.adapters.memory import MemoryStore
from extension_fsm.adapters.sqlalchemy import SqlAlchemyStore
from extension_fsm.ports import InspectableStore
from extension_fsm.testing import StoreContract
from tests.integration.sql_support import private_postgres_database


async def _sql(url: str, *, direct: bool | None = None) -> SqlAlchemyStore:
    # A fresh prefix per test: isolation inside one database, and the prefix path tested.
    prefix = f"t{uuid.uuid4().hex[:8]}_"
    return await SqlAlchemyStore.open(
        url, create_schema=True, table_prefix=prefix, clock="local", direct=direct
    )


class TestMemoryStore(StoreContract):
    async def make_store(self, tmp_path: Path) -> InspectableStore:
        return MemoryStore()


class TestSqliteFile(StoreContract):
    async def make_store(self, tmp_path: Path) -> InspectableStore:
        return await _sql(f"sqlite:///{tmp_path / 'contract.db'}")


class TestSqliteInMemory(StoreContract):
    async def make_store(self, tmp_path: Path) -> InspectableStore:
        return await _sql("sqlite://")


class TestSqliteAiosqlite(StoreContract):
    """The driver that keeps every call off the loop."""

    async def make_store(self, tmp_path: Path) -> InspectableStore:
        return await _sql(f"sqlite+aiosqlite:///{tmp_path / 'contract.db'}")


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    with private_postgres_database("contract") as url:
        yield url


class TestPostgres(StoreContract):
    """The direct path: units of work and the outbox on asyncpg itself."""

    @pytest_asyncio.fixture
    async def store(self, pg_url: str) -> AsyncIterator[InspectableStore]:
        made = await _sql(pg_url, direct=True)
        assert made.is_direct
        try:
            yield made
        finally:
            await self.close_store(made)


class TestPostgresSqlAlchemy(StoreContract):
    """The same database through SQLAlchemy's engine (``direct=False``)."""

    @pytest_asyncio.fixture
    async def store(self, pg_url: str) -> AsyncIterator[InspectableStore]:
        made = await _sql(pg_url, direct=False)
        assert not made.is_direct
        try:
            yield made
        finally:
            await self.close_store(made)
