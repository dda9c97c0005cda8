"""Reference schema: host rows, extensions, outbox, transition log.

Revision ID: 0001
Revises:
Create Date: 2026-01-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import context, op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = ("extension_fsm",)
depends_on: str | Sequence[str] | None = None

ID = sa.String(64)
STATUS = sa.String(16)
TS = sa.DateTime(timezone=True)
SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _n(key: str) -> str:
    return str(context.get_x_argument(as_dictionary=True).get("table_prefix", "")) + key


def _where(sql: str) -> dict[str, object]:
    return {"postgresql_where": sa.text(sql), "sqlite_where": sa.text(sql)}


def upgrade() -> None:
    op.create_table(
        _n("customers"),
        sa.Column("id", ID, primary_key=True),
        sa.Column("display_name", sa.String(255), nullable=False, server_default=""),
    )
    op.create_table(
        _n("chat_sessions"),
        sa.Column("id", ID, primary_key=True),
        sa.Column("customer_id", ID, nullable=False),
        sa.Column("mitra_id", ID, nullable=False),
        sa.Column("status", STATUS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("closure_deadline", TS, nullable=True),
        sa.Column("topic_sensitivity", sa.String(64), nullable=True),
    )
    op.create_table(
        _n("payment_sessions"),
        sa.Column("id", ID, primary_key=True),
        sa.Column("customer_id", ID, nullable=False),
        sa.Column("status", STATUS, nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("is_extension", sa.Boolean(), nullable=False),
        sa.Column("is_first_session_discount", sa.Boolean(), nullable=False),
        sa.Column("failure_cause", sa.String(48), nullable=True),
    )
    ledger = _n("customer_transactions")
    op.create_table(
        ledger,
        sa.Column("seq", SEQ, primary_key=True, autoincrement=True),
        sa.Column("customer_id", ID, nullable=False),
        sa.Column("session_id", ID, nullable=False),
        sa.Column("extension_id", ID, nullable=True),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index(f"uq_{ledger}_extension", ledger, ["extension_id"], unique=True)
    x = _n("extensions")
    op.create_table(
        x,
        sa.Column("id", ID, primary_key=True),
        sa.Column("session_id", ID, nullable=False),
        sa.Column("duration_minutes", sa.Integer(), nullable=False),
        sa.Column("price", sa.BigInteger(), nullable=False),
        sa.Column("payment_session_id", ID, nullable=False),
        sa.Column("status", STATUS, nullable=False),
        sa.Column("requested_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("timeout_seconds", sa.Integer(), nullable=False),
        sa.Column("responded_at", TS, nullable=True),
        sa.Column("via_timeout", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.String(16), nullable=True),
        sa.Column("failure_cause", sa.String(48), nullable=True),
    )
    op.create_index(
        f"uq_{x}_pending_session",
        x,
        ["session_id"],
        unique=True,
        **_where("status = 'pending'"),
    )
    op.create_index(
        f"uq_{x}_live_payment",
        x,
        ["payment_session_id"],
        unique=True,
        **_where("status IN ('pending', 'accepted')"),
    )
    op.create_index(f"ix_{x}_due", x, ["expires_at"], **_where("status = 'pending'"))
    outbox = _n("extension_outbox")
    op.create_table(
        outbox,
        sa.Column("seq", SEQ, primary_key=True, autoincrement=True),
        sa.Column("id", ID, nullable=False, unique=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("dedupe_key", sa.String(255), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("available_at", TS, nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("delivered_at", TS, nullable=True),
        sa.Column("dead_at", TS, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
    )
    op.create_index(
        f"ix_{outbox}_undelivered",
        outbox,
        ["seq"],
        **_where("delivered_at IS NULL AND dead_at IS NULL"),
    )
    log = _n("extension_transitions")
    op.create_table(
        log,
        sa.Column("seq", SEQ, primary_key=True, autoincrement=True),
        sa.Column("entity", sa.String(16), nullable=False),
        sa.Column("entity_id", ID, nullable=False),
        sa.Column("from_status", STATUS, nullable=True),
        sa.Column("to_status", STATUS, nullable=False),
        sa.Column("event", sa.String(64), nullable=False),
        sa.Column("cause", sa.String(64), nullable=True),
        sa.Column("actor", sa.String(32), nullable=False),
        sa.Column("at", TS, nullable=False),
    )
    op.create_index(f"ix_{log}_entity", log, ["entity", "entity_id"])


def downgrade() -> None:
    for key in (
        "extension_transitions",
        "extension_outbox",
        "extensions",
        "customer_transactions",
        "payment_sessions",
        "chat_sessions",
        "customers",
    ):
        op.drop_table(_n(key))
