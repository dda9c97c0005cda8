"""Outbox lanes: a session's timer commands and payment events in commit order.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import context, op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _n(key: str) -> str:
    return str(context.get_x_argument(as_dictionary=True).get("table_prefix", "")) + key


def _where(sql: str) -> dict[str, object]:
    return {"postgresql_where": sa.text(sql), "sqlite_where": sa.text(sql)}


def upgrade() -> None:
    outbox = _n("extension_outbox")
    # Rows written before this revision have no lane: they go out as before.
    op.add_column(outbox, sa.Column("lane", sa.String(96), nullable=True))
    op.create_index(
        f"ix_{outbox}_lane",
        outbox,
        ["lane", "seq"],
        **_where("lane IS NOT NULL AND delivered_at IS NULL AND dead_at IS NULL"),
    )


def downgrade() -> None:
    outbox = _n("extension_outbox")
    op.drop_index(f"ix_{outbox}_lane", table_name=outbox)
    with op.batch_alter_table(outbox) as batch:
        batch.drop_column("lane")
