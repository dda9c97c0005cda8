"""Shared by the SQL tests: a private PostgreSQL database per use, and the
engines every store test runs on."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from tests.ci import IN_CI

if TYPE_CHECKING:
    from extension_fsm.adapters.sqlalchemy import SqlAlchemyStore

PG_ADMIN_URL = os.environ.get(
    "EXTENSION_FSM_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


def _admin_conninfo() -> str:
    url = make_url(PG_ADMIN_URL).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


def postgres_unavailable() -> str | None:
    """Why PostgreSQL cannot be used, or ``None`` when it can."""
    import psycopg

    try:
        with psycopg.connect(_admin_conninfo(), connect_timeout=3):
            return None
    except Exception as err:  # any failure to connect means "absent"
        return f"PostgreSQL not reachable at {PG_ADMIN_URL}: {err}"


def require_postgres() -> None:
    """Skip (or, under CI, fail) when PostgreSQL is absent."""
    reason = postgres_unavailable()
    if reason is None:
        return
    if IN_CI:
        pytest.fail(f"CI requires PostgreSQL: {reason}")
    pytest.skip(reason)


@contextmanager
def private_postgres_database(tag: str = "sql") -> Iterator[str]:
    """Create a uniquely named database, yield its ``postgresql://`` URL, drop it."""
    import psycopg

    require_postgres()
    name = f"efsm_{tag}_{os.getpid()}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(_admin_conninfo(), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield (
            make_url(PG_ADMIN_URL)
            .set(drivername="postgresql", database=name)
            .render_as_string(hide_password=False)
        )
    finally:
        with psycopg.connect(_admin_conninfo(), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def database_now(store: SqlAlchemyStore) -> datetime:
    """The database's ``now()``, read through ``store``."""
    async with store.unit_of_work() as uow:
        row = await uow.first(select(func.now()))
    assert row is not None
    return row[0]  # type: ignore[no-any-return]
