"""Alembic environment: async engines, SQLite batch mode, host table prefix.

URL, first found: ``config.attributes["database_url"]`` (what
``extension-fsm db --db URL`` passes), ``EXTENSION_FSM_DATABASE_URL``, then
``sqlalchemy.url`` in alembic.ini (plain ``sqlite://`` / ``postgresql://``
URLs are mapped to the async drivers).  ``-x table_prefix=fsm_`` prefixes
every table, and the version table: ``{prefix}extension_fsm_version``, so the
library's revisions never mix with a host's own ``alembic_version``;
``-x layout=seed`` adopts the Node service's tables (revision 0002).
"""

from __future__ import annotations

import asyncio
import os
import threading
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from alembic import context
from extension_fsm.adapters.sqlalchemy import build_tables, to_async_url
from extension_fsm.adapters.sqlalchemy.urls import split_asyncpg_options
from extension_fsm.migrate import version_table

config = context.config
x_args = context.get_x_argument(as_dictionary=True)
table_prefix = str(x_args.get("table_prefix", ""))
target_metadata = build_tables(table_prefix, layout=str(x_args.get("layout", "default"))).metadata


def database_url() -> str:
    """Where to migrate: the caller, the environment, then alembic.ini."""
    url = (
        config.attributes.get("database_url")
        or os.environ.get("EXTENSION_FSM_DATABASE_URL")
        or config.get_main_option("sqlalchemy.url")
    )
    if not url:
        raise RuntimeError("set EXTENSION_FSM_DATABASE_URL or sqlalchemy.url in alembic.ini")
    return str(url)


def _configure(**kwargs: Any) -> None:
    context.configure(
        target_metadata=target_metadata,
        render_as_batch=True,  # SQLite cannot ALTER most things; batch copies the table
        compare_type=True,
        version_table=version_table(table_prefix),
        **kwargs,
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
        if config.attributes.get("drop_version_table_at_base"):
            _drop_version_table(connection)


def _drop_version_table(connection: Connection) -> None:
    """After ``downgrade base``: the version table, empty now, goes too."""
    from sqlalchemy import MetaData, Table, inspect

    name = version_table(table_prefix)
    if inspect(connection).has_table(name) and not context.get_context().get_current_heads():
        Table(name, MetaData()).drop(connection)


async def _run_async() -> None:
    url = to_async_url(database_url())
    connect_args: dict[str, Any] = {}
    if url.get_driver_name() == "asyncpg":  # application_name and the like, converted
        url, options = split_asyncpg_options(url)
        connect_args = {**options.connect, "server_settings": options.server_settings}
    engine = create_async_engine(url, poolclass=NullPool, connect_args=connect_args)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run_sync)
            await connection.commit()
    finally:
        await engine.dispose()


def _run_online() -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(_run_async())
        return
    # Called from inside an event loop (a host's async start-up): a thread of its own.
    failure: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(_run_async())
        except BaseException as err:
            failure.append(err)

    worker = threading.Thread(target=run, name="extension-fsm-migrate")
    worker.start()
    worker.join()
    if failure:
        raise failure[0]


if context.is_offline_mode():
    run_migrations_offline()
else:
    _run_online()
