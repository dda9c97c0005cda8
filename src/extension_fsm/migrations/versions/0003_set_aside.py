"""Set-aside columns on extensions: a pending row the sweep cannot decide is
skipped until ``set_aside_until`` (retried with backoff), never blocking the rows
behind it.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import context, op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _extensions() -> str:
    """The extension table: ``extensions``, or the Node service's
    ``session_extensions`` under ``-x layout=seed``; prefixed like every table."""
    x = context.get_x_argument(as_dictionary=True)
    name = "session_extensions" if x.get("layout") == "seed" else "extensions"
    return str(x.get("table_prefix", "")) + name


def upgrade() -> None:
    with op.batch_alter_table(_extensions()) as batch:
        batch.add_column(sa.Column("set_aside_until", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(
            sa.Column("set_aside_count", sa.Integer(), nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("set_aside_reason", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table(_extensions()) as batch:
        batch.drop_column("set_aside_reason")
        batch.drop_column("set_aside_count")
        batch.drop_column("set_aside_until")
