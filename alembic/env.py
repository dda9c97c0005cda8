"""Alembic environment: async engines, SQLite batch mode, host table prefix.

URL: ``EXTENSION_FSM_DATABASE_URL`` if set, else ``sqlalchemy.url`` in
alembic.ini (plain ``sqlite://`` / ``postgresql://`` URLs are mapped to the
async drivers).  ``-x table_prefix=fsm_`` prefixes every table; ``-x layout=seed``
adopts the Node service's tables (revision 0003).
"""

from __future__ import annotations

import asyncio
import os

from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from alembic import context
from extension_fsm.adapters.sqlalchemy import build_tables, to_async_url

config = context.config
x_args = context.get_x_argument(as_dictionary=True)
table_prefix = x_args.get("table_prefix", "")
# ``-x layout=seed``: the Node service's tables (see 0003_seed_cutover).
target_metadata = build_tables(table_prefix, layout=x_args.get("layout", "default")).metadata


def database_url() -> str:
    """Where to migrate: the environment first, then alembic.ini."""
    url = os.environ.get("EXTENSION_FSM_DATABASE_URL") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("set EXTENSION_FSM_DATABASE_URL or sqlalchemy.url in alembic.ini")
    return url


def _configure(**kwargs: object) -> None:
    context.configure(
        target_metadata=target_metadata,
        render_as_batch=True,  # SQLite cannot ALTER most things; batch copies the table
        compare_type=True,
        **kwargs,  # type: ignore[arg-type]
    )


def run_migrations_offline() -> None:
    """Emit SQL to stdout instead of running it."""
    _configure(url=to_async_url(database_url()), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def _run_sync(connection: Connection) -> None:
    _configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    engine = create_async_engine(to_async_url(database_url()), poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run_sync)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    asyncio.run(_run_async())
