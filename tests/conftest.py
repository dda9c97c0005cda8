"""Shared test set-up: hypothesis profiles and the service-availability rule."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from extension_fsm.outbox import BACKGROUND_TASK_NAME
from extension_fsm.ports import InspectableStore
from tests.ci import IN_CI

settings.register_profile(
    "ci",
    max_examples=500,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile(
    "dev",
    max_examples=100,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
# Mutation testing (tools/mutation.sh): few, fixed examples, so each mutant's run
# is short and the score is the same on every run.
settings.register_profile(
    "mutation",
    max_examples=20,
    stateful_step_count=20,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if IN_CI else "dev"))


@pytest.fixture(autouse=True)
async def _background_deliveries_end_with_the_test() -> AsyncIterator[None]:
    """A call's outbox rows are delivered by a background task; a test that does
    not wait for them (it checks rows, not deliveries) must not leave them
    running into the next test's loop: wait for them (bounded), then cancel."""
    yield
    tasks = [
        t for t in asyncio.all_tasks() if t.get_name() == BACKGROUND_TASK_NAME and not t.done()
    ]
    if tasks:
        # Usually these ended already: a SQL store's aclose() waits for the work
        # holding a connection and refuses new work (a late delivery fails fast).
        _, late = await asyncio.wait(tasks, timeout=60)
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late)


# ------------------------------------------------------------------ backends

#: the stores every backend-parametrised test runs on
BACKENDS = ("memory", "sqlite", "postgres")
SQL_BACKENDS = ("sqlite", "postgres")


@pytest.fixture(scope="module")
def pg_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A private PostgreSQL database for this test module (skipped without a
    server, a failure under ``CI=true``), dropped afterwards."""
    from tests.integration.sql_support import private_postgres_database

    tag = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")[:16]
    with private_postgres_database(tag) as url:
        yield url


async def open_backend(
    request: pytest.FixtureRequest, name: str, tmp_path: Path, **options: Any
) -> InspectableStore:
    """A fresh store on ``name`` (one of :data:`BACKENDS`) with its schema:
    the memory store, a SQLite file under ``tmp_path``, or the module's
    PostgreSQL database (``options`` go to :meth:`SqlAlchemyStore.open`)."""
    if name == "memory":
        from extension_fsm.adapters.memory import MemoryStore

        return MemoryStore()
    from extension_fsm.adapters.sqlalchemy import SqlAlchemyStore

    if name == "sqlite":
        url = f"sqlite:///{tmp_path / 'backend.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    store = await SqlAlchemyStore.open(url, create_schema=True, **options)
    if name == "postgres":  # the module's database is shared: start from empty tables
        await store.database.run_sync(empty_tables(store))
    return store


def empty_tables(store: Any) -> Any:
    """A function of a connection that deletes every row of ``store``'s tables."""

    def empty(conn: Any) -> None:
        for table in reversed(store.tables.metadata.sorted_tables):
            conn.execute(table.delete())

    return empty


async def close_backend(store: InspectableStore) -> None:
    aclose = getattr(store, "aclose", None)
    if aclose is not None:
        await aclose()


@pytest.fixture(params=BACKENDS)
async def backend(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[InspectableStore]:
    """Each store: memory, SQLite (a file) and PostgreSQL (empty tables)."""
    store = await open_backend(request, request.param, tmp_path)
    try:
        yield store
    finally:
        await close_backend(store)


@pytest.fixture(params=SQL_BACKENDS)
async def sql_backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    """The SQL store on SQLite (a file) and on PostgreSQL (empty tables)."""
    store = await open_backend(request, request.param, tmp_path, clock="local")
    try:
        yield store
    finally:
        await close_backend(store)
