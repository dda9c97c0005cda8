"""Run the packaged Alembic migrations from anywhere (``extension-fsm db …``).

The revisions live in :mod:`extension_fsm.migrations`, inside the wheel; the
Alembic configuration is built here in code, so no ``alembic.ini`` is needed.
The library's version table is ``{table_prefix}extension_fsm_version``: its
revisions never mix with a host's own ``alembic_version``.  Every revision
carries the branch label ``extension_fsm`` (see ``docs/operations.md`` for a
host that runs them from its own Alembic instead).

Needs the ``sql`` extra (SQLAlchemy, Alembic, aiosqlite).
"""

from __future__ import annotations

import argparse
import io
from collections.abc import Callable, Mapping
from importlib import resources
from typing import TYPE_CHECKING, Any, TypeAlias

if TYPE_CHECKING:  # imported lazily: the ``sql`` extra may not be installed
    from alembic.config import Config
    from sqlalchemy.engine import Connection

    from .adapters.sqlalchemy import Tables

__all__ = [
    "BRANCH",
    "SCRIPT_LOCATION",
    "alembic_config",
    "create_and_stamp",
    "current",
    "downgrade",
    "head",
    "stamp",
    "upgrade",
    "version_table",
]

#: where the revisions are, in Alembic's ``package:directory`` notation
SCRIPT_LOCATION = "extension_fsm:migrations"
#: the branch label on the first revision (``alembic upgrade extension_fsm@head``)
BRANCH = "extension_fsm"

#: the revisions' ``-x`` arguments (``layout``, ``extension_timeout_seconds``)
Options: TypeAlias = Mapping[str, str] | None


def version_table(table_prefix: str = "") -> str:
    """The table Alembic records the library's revision in."""
    return f"{table_prefix}extension_fsm_version"


def alembic_config(
    url: str,
    *,
    table_prefix: str = "",
    stdout: Any = None,
    options: Mapping[str, str] | None = None,
) -> Config:
    """An Alembic ``Config`` for the packaged revisions against ``url``;
    ``options`` are the revisions' ``-x`` arguments (``layout``,
    ``extension_timeout_seconds``)."""
    from alembic.config import Config

    cfg = Config(stdout=stdout or io.StringIO(), cmd_opts=argparse.Namespace(x=[]))
    cfg.set_main_option("script_location", SCRIPT_LOCATION)
    cfg.attributes["database_url"] = url  # not a main option: no %-interpolation of the URL
    x = {"table_prefix": table_prefix, **(options or {})}
    cfg.cmd_opts.x.extend(f"{k}={v}" for k, v in x.items() if v)  # type: ignore[union-attr]
    return cfg


def head() -> str:
    """The newest revision in the package."""
    from alembic.script import ScriptDirectory

    heads = ScriptDirectory(_script_dir()).get_heads()
    if len(heads) != 1:  # pragma: no cover - a broken package
        raise RuntimeError(f"the packaged migrations have {len(heads)} heads: {heads}")
    return heads[0]


def upgrade(
    url: str, revision: str = "head", *, table_prefix: str = "", options: Options = None
) -> list[str]:
    """Migrate ``url`` up to ``revision``; the revision(s) it is at afterwards."""
    from alembic import command

    return _migrate(command.upgrade, url, revision, table_prefix, options)


def downgrade(
    url: str, revision: str, *, table_prefix: str = "", options: Options = None
) -> list[str]:
    """Migrate ``url`` down to ``revision``; ``base`` removes every table,
    the version table included, and leaves nothing behind."""
    from alembic import command

    cfg = alembic_config(url, table_prefix=table_prefix, options=options)
    # ``base``: the environment drops the version table too (empty, it would stay)
    cfg.attributes["drop_version_table_at_base"] = True
    command.downgrade(cfg, revision)
    return current(url, table_prefix=table_prefix)


def stamp(url: str, revision: str, *, table_prefix: str = "", options: Options = None) -> list[str]:
    """Record ``revision`` as applied without running anything."""
    from alembic import command

    return _migrate(command.stamp, url, revision, table_prefix, options)


def _migrate(
    run: Callable[[Config, str], object],
    url: str,
    revision: str,
    table_prefix: str,
    options: Options,
) -> list[str]:
    """``run`` (an Alembic command) to ``revision`` on ``url``; the revision(s)
    ``url`` is at afterwards."""
    run(alembic_config(url, table_prefix=table_prefix, options=options), revision)
    return current(url, table_prefix=table_prefix)


def current(url: str, *, table_prefix: str = "") -> list[str]:
    """The revision(s) ``url`` is at (empty: none, or no version table)."""
    from alembic import command

    out = io.StringIO()
    command.current(alembic_config(url, table_prefix=table_prefix, stdout=out))
    return [line.split()[0] for line in out.getvalue().splitlines() if line.strip()]


def create_and_stamp(conn: Connection, tables: Tables, table_prefix: str = "") -> None:
    """Create the missing tables; when this created the schema (no extensions
    table before), record the head revision, so a later ``db upgrade`` is a
    no-op.  Tables found already there are not stamped: nobody knows which
    revision made them (``extension-fsm db stamp`` says it)."""
    from sqlalchemy import inspect

    fresh = not inspect(conn).has_table(tables.extensions.name)
    tables.metadata.create_all(conn)
    if not fresh:
        return
    try:
        from alembic.migration import MigrationContext
        from alembic.script import ScriptDirectory
    except ImportError:  # pragma: no cover - SQLAlchemy without Alembic
        return
    ctx = MigrationContext.configure(conn, opts={"version_table": version_table(table_prefix)})
    if not ctx.get_current_heads():
        ctx.stamp(ScriptDirectory(_script_dir()), "heads")


def _script_dir() -> str:
    return str(resources.files("extension_fsm") / "migrations")
