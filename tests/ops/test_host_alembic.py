"""A host runs our revisions from its own Alembic: ``version_locations`` names
the packaged directory, the ``extension_fsm`` branch label selects ours."""

from __future__ import annotations

import textwrap
from pathlib import Path

from alembic.config import Config
from sqlalchemy import create_engine, inspect, text

from alembic import command
from extension_fsm import migrate
from extension_fsm.adapters.sqlalchemy import build_tables

HOST_ENV = """
from alembic import context
from sqlalchemy import create_engine

engine = create_engine(context.config.get_main_option("sqlalchemy.url"))
with engine.connect() as connection:
    context.configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
"""

HOST_REVISION = """
from alembic import op
import sqlalchemy as sa

revision = "h1"
down_revision = None
branch_labels = ("host",)
depends_on = None


def upgrade():
    op.create_table("host_things", sa.Column("id", sa.Integer, primary_key=True))


def downgrade():
    op.drop_table("host_things")
"""


def _host(tmp_path: Path) -> tuple[Config, str]:
    migrations = tmp_path / "migrations"
    (migrations / "versions").mkdir(parents=True)
    (migrations / "env.py").write_text(textwrap.dedent(HOST_ENV))
    (migrations / "versions" / "h1_things.py").write_text(textwrap.dedent(HOST_REVISION))
    url = f"sqlite:///{tmp_path / 'host.db'}"
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations))
    cfg.set_main_option("path_separator", "space")  # "os" would split "extension_fsm:…" on Unix
    cfg.set_main_option(
        "version_locations", f"{migrations / 'versions'} extension_fsm:migrations/versions"
    )
    cfg.set_main_option("sqlalchemy.url", url)
    return cfg, url


def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return set(inspect(conn).get_table_names())
    finally:
        engine.dispose()


def test_the_host_upgrades_our_branch_by_its_label_then_everything(tmp_path: Path) -> None:
    cfg, url = _host(tmp_path)
    ours = {t.name for t in build_tables().metadata.sorted_tables}
    command.upgrade(cfg, "extension_fsm@head")
    assert ours <= _tables(url) and "host_things" not in _tables(url)
    command.upgrade(cfg, "heads")
    assert ours | {"host_things", "alembic_version"} <= _tables(url)
    engine = create_engine(url)
    with engine.connect() as conn:
        versions = {r[0] for r in conn.execute(text("SELECT version_num FROM alembic_version"))}
    engine.dispose()
    assert versions == {"h1", migrate.head()}
    command.downgrade(cfg, "extension_fsm@base")
    assert not ours & _tables(url) and "host_things" in _tables(url)
