"""The same race machine over the SQL adapter on SQLite (in memory, one
shared connection): the database's unique indexes, compare-and-set updates
and ``BEGIN IMMEDIATE`` writers are held to the invariants the in-memory
store is held to.

A SQL unit of work costs more than a memory one, so this runs fewer, shorter
examples than the in-memory machine.  Calls run at once, as on the memory
store: units of work take turns on the store's lock (each of their calls
runs on the store's SQLite thread and is awaited before the next), and
everything around them (deliveries, timers, the yielding store's switches)
interleaves as hypothesis draws it.  Real concurrency
inside a database is what tests/integration/test_pg_races.py is for.
"""

from __future__ import annotations

import pytest
from hypothesis import settings

from extension_fsm.adapters.sqlalchemy import SqlAlchemyStore
from extension_fsm.ports import InspectableStore
from extension_fsm.testing import ExtensionRaces, YieldingStore
from tests.ci import IN_CI

pytestmark = pytest.mark.timeout(900)


class ExtensionRacesOnSqlite(ExtensionRaces):
    """``ExtensionRaces`` with its store on SQLite."""

    async def make_store(self) -> InspectableStore:
        return YieldingStore(await SqlAlchemyStore.open("sqlite://", create_schema=True))


TestExtensionRacesOnSqlite = ExtensionRacesOnSqlite.TestCase
TestExtensionRacesOnSqlite.settings = settings(
    TestExtensionRacesOnSqlite.settings,
    max_examples=60 if IN_CI else 15,
    stateful_step_count=40,
)
