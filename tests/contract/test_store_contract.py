"""The store contract (``extension_fsm.testing.StoreContract``) on every store of
the library, used exactly as a host uses it: in memory, SQLite (file and
``sqlite://``), PostgreSQL from a URL, and PostgreSQL on a host's own
``AsyncEngine``."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest_asyncio
from sqlalchemy.ext.asyncio import create_async_engine

from extension_fsm.adapters.memory import MemoryStore
from extension_fsm.adapters.sqlalchemy import SqlAlchemyStore, resolve_url
from extension_fsm.ports import InspectableStore
from extension_fsm.testing import StoreContract


async def _sql(url: Any) -> SqlAlchemyStore:
    # A fresh prefix per test: isolation inside one database, and the prefix path tested.
    prefix = f"t{uuid.uuid4().hex[:8]}_"
    return await SqlAlchemyStore.open(url, create_schema=True, table_prefix=prefix, clock="local")


class TestMemoryStore(StoreContract):
    async def make_store(self, tmp_path: Path) -> InspectableStore:
        return MemoryStore()


class TestSqliteFile(StoreContract):
    async def make_store(self, tmp_path: Path) -> InspectableStore:
        return await _sql(f"sqlite:///{tmp_path / 'contract.db'}")


class TestSqliteInMemory(StoreContract):
    async def make_store(self, tmp_path: Path) -> InspectableStore:
        return await _sql("sqlite://")


class TestPostgres(StoreContract):
    @pytest_asyncio.fixture
    async def store(self, pg_url: str) -> AsyncIterator[InspectableStore]:
        made = await _sql(pg_url)
        try:
            yield made
        finally:
            await self.close_store(made)


class TestPostgresOnTheHostsEngine(StoreContract):
    """The store on an ``AsyncEngine`` the host made: the engine outlives the store."""

    @pytest_asyncio.fixture
    async def store(self, pg_url: str) -> AsyncIterator[InspectableStore]:
        engine = create_async_engine(resolve_url(pg_url))
        made = await _sql(engine)
        try:
            yield made
        finally:
            await self.close_store(made)
            async with engine.connect() as conn:  # still usable: the store did not dispose it
                assert (await conn.exec_driver_sql("SELECT 1")).scalar() == 1
            await engine.dispose()
