"""Command seq: the outbox's ``seq`` is never handed out twice.

Session-timer commands and payment events carry their outbox row's ``seq``,
and a receiver drops a command whose ``seq`` is not above the highest it has
applied for the session.  So ``seq`` must only ever grow, even after a host
deletes old delivered rows.  PostgreSQL's sequence already never goes back;
SQLite's plain ``INTEGER PRIMARY KEY`` re-uses the highest number once that
row is deleted, so on SQLite the table is rebuilt with ``AUTOINCREMENT``
(the rows, their numbers and the indexes are kept).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import context, op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _n(key: str) -> str:
    return str(context.get_x_argument(as_dictionary=True).get("table_prefix", "")) + key


def _rebuild(*, autoincrement: bool) -> None:
    """Rebuild the SQLite outbox with or without ``AUTOINCREMENT``."""
    if op.get_bind().dialect.name != "sqlite":
        return
    outbox = _n("extension_outbox")
    where_open = "delivered_at IS NULL AND dead_at IS NULL"
    # Dropped first and made again after, so the copy needs no index reflection.
    op.drop_index(f"ix_{outbox}_lane", table_name=outbox)
    op.drop_index(f"ix_{outbox}_undelivered", table_name=outbox)
    with op.batch_alter_table(
        outbox, recreate="always", table_kwargs={"sqlite_autoincrement": autoincrement}
    ):
        pass
    op.create_index(f"ix_{outbox}_undelivered", outbox, ["seq"], sqlite_where=sa.text(where_open))
    op.create_index(
        f"ix_{outbox}_lane",
        outbox,
        ["lane", "seq"],
        sqlite_where=sa.text(f"lane IS NOT NULL AND {where_open}"),
    )


def upgrade() -> None:
    _rebuild(autoincrement=True)


def downgrade() -> None:
    _rebuild(autoincrement=False)
