"""Seed cutover: adopt the Node service's own tables, in-flight extensions included.

A database the Node service ran on has ``customers``, ``chat_sessions``,
``payment_sessions``, ``customer_transactions`` and ``session_extensions``
(``requested_duration_minutes``, ``requested_price``, ``payment_session_id``,
``requested_at``, ``responded_at``; no deadline column) and no
``alembic_version``.  It is adopted in two commands::

    extension-fsm db stamp 0001 --layout seed --db URL
    extension-fsm db upgrade --layout seed --extension-timeout-seconds 10 --db URL

The stamp says "the host tables are there" (as the seed laid them out); this
revision then adds what the library needs: the deadline (``expires_at``),
``timeout_seconds``, ``via_timeout``, ``reason`` and ``failure_cause`` on
``session_extensions``, ``closure_deadline`` on ``chat_sessions``,
``failure_cause`` on ``payment_sessions``, ``extension_id`` on
``customer_transactions``, the outbox and the transition log, and the
indexes (one pending extension per session, one live extension per payment,
one charge per extension, the sweep's due index).

Every existing extension gets ``expires_at = requested_at + N seconds``, N
being ``-x extension_timeout_seconds`` (the host's configured value; default
10, the seed's default).  So an extension still pending at cutover is due
exactly when the seed's timer would have fired, and the first sweep resolves
it with the timeout policy then in force.  The deadline is written once, as
data, rather than computed on every read: the sweep's partial index on
``expires_at`` can only find rows that have one.

Before anything changes, the host's column types are checked
(:mod:`extension_fsm.migrations.host_columns`): money in an exact numeric
column, times in ``timestamp`` columns (with or without time zone), whole
amounts; anything else stops the migration, naming table and column.

Existing rows that break the indexes' rules (two pending extensions on one
session, one payment behind two pending or accepted extensions; the seed had
no guard against either) stop the migration with their ids: which of them
stands is a money decision for an operator, not for a migration.

With the default layout (``-x layout`` not ``seed``) this revision does nothing:
revision 0001 already created all of this.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import timedelta

import sqlalchemy as sa

from alembic import context, op
from extension_fsm.adapters.sqlalchemy.schema import UTCDateTime
from extension_fsm.migrations.host_columns import refuse_unsafe_types

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.String(64)
STATUS = sa.String(16)
TS = sa.DateTime(timezone=True)
SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
SEED_DEFAULT_TIMEOUT_SECONDS = 10.0


def _x(key: str, default: str = "") -> str:
    return str(context.get_x_argument(as_dictionary=True).get(key, default))


def _n(key: str) -> str:
    return _x("table_prefix") + key


def _seed() -> bool:
    return _x("layout", "default") == "seed"


def _where(sql: str) -> dict[str, object]:
    return {"postgresql_where": sa.text(sql), "sqlite_where": sa.text(sql)}


def _timeout() -> float:
    raw = _x("extension_timeout_seconds", str(SEED_DEFAULT_TIMEOUT_SECONDS))
    seconds = float(raw)
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"extension_timeout_seconds must be a positive number, not {raw!r}")
    return seconds


def _math_round(value: float) -> int:
    """``Math.round``, as the seed rounded the ``timeout_seconds`` it announced."""
    floor = math.floor(value)
    return floor + 1 if value - floor >= 0.5 else floor


def _columns(table: str) -> set[str]:
    return {c["name"] for c in sa.inspect(op.get_bind()).get_columns(table)}


def _add_missing(table: str, *columns: sa.Column[object]) -> None:
    have = _columns(table)
    for column in columns:
        if column.name not in have:
            op.add_column(table, column)


#: the old service's columns the library reads and this revision does not add
_READ: dict[str, tuple[str, ...]] = {
    "customers": ("id", "display_name"),
    "chat_sessions": ("id", "customer_id", "mitra_id", "status", "topic_sensitivity", "expires_at"),
    "payment_sessions": (
        "id",
        "customer_id",
        "status",
        "amount",
        "is_extension",
        "is_first_session_discount",
    ),
    "customer_transactions": ("id", "customer_id", "session_id", "type", "amount"),
    "session_extensions": (
        "id",
        "session_id",
        "requested_duration_minutes",
        "requested_price",
        "status",
        "requested_at",
        "responded_at",
        "payment_session_id",
    ),
}


def _refuse_missing_columns() -> None:
    """Stop, naming table and column, before anything is changed, when a table
    or column the library reads is not there (every call would fail later)."""
    inspector = sa.inspect(op.get_bind())
    missing: list[str] = []
    for table, columns in _READ.items():
        name = _n(table)
        if not inspector.has_table(name):
            missing.append(f"table {name}")
            continue
        have = {c["name"] for c in inspector.get_columns(name)}
        missing += [f"{name}.{column}" for column in columns if column not in have]
    if missing:
        why = (
            " (the library checks each requested price against the amount the customer paid)"
            if f"{_n('payment_sessions')}.amount" in missing
            else ""
        )
        raise RuntimeError(
            "the old service's tables lack what the library reads: "
            + ", ".join(missing)
            + why
            + "; add them and run the upgrade again (nothing was changed)"
        )


def _refuse_conflicts(x: str) -> None:
    """Stop, naming the rows, when existing data breaks a uniqueness rule."""
    bind = op.get_bind()
    checks = {
        "sessions with more than one pending extension": (
            f"SELECT session_id FROM {x} WHERE status = 'pending' "
            "GROUP BY session_id HAVING COUNT(*) > 1"
        ),
        "payment sessions behind more than one pending or accepted extension": (
            f"SELECT payment_session_id FROM {x} WHERE status IN ('pending', 'accepted') "
            "AND payment_session_id IS NOT NULL "
            "GROUP BY payment_session_id HAVING COUNT(*) > 1"
        ),
    }
    problems = []
    for what, sql in checks.items():
        ids = [str(row[0]) for row in bind.execute(sa.text(sql))]
        if ids:
            problems.append(f"{what}: {', '.join(sorted(ids))}")
    if problems:
        raise RuntimeError(
            f"{x} has rows the library's rules forbid; resolve them, then migrate again. "
            + "; ".join(problems)
        )


def _backfill_deadlines(x: str, seconds: float) -> None:
    """``expires_at = requested_at + seconds`` and ``timeout_seconds`` where unset."""
    bind = op.get_bind()
    announced = _math_round(seconds)
    if bind.dialect.name == "postgresql":
        bind.execute(
            sa.text(
                f"UPDATE {x} SET expires_at = requested_at + make_interval(secs => :s), "
                "timeout_seconds = :t WHERE expires_at IS NULL"
            ),
            {"s": seconds, "t": announced},
        )
        return
    # SQLite: through the column type, so the stored text is the form the store reads.
    table = sa.table(x, sa.column("id", ID), sa.column("requested_at", UTCDateTime()))
    deadlines = sa.table(
        x,
        sa.column("id", ID),
        sa.column("expires_at", UTCDateTime()),
        sa.column("timeout_seconds", sa.Integer()),
    )
    rows = bind.execute(
        sa.select(table.c.id, table.c.requested_at).where(sa.text("expires_at IS NULL"))
    ).all()
    update = (
        sa.update(deadlines)
        .where(deadlines.c.id == sa.bindparam("row_id"))
        .values(expires_at=sa.bindparam("deadline"), timeout_seconds=announced)
    )
    step = timedelta(seconds=seconds)
    params = [{"row_id": r.id, "deadline": r.requested_at + step} for r in rows]
    if params:
        bind.execute(update, params)


def _create_outbox_and_log() -> None:
    """The two tables of the library's own, as revision 0001 defines them."""
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


def upgrade() -> None:
    if not _seed():
        return
    seconds = _timeout()
    x = _n("session_extensions")
    _refuse_missing_columns()
    refuse_unsafe_types(op.get_bind(), _n)
    _refuse_conflicts(x)
    _add_missing(_n("chat_sessions"), sa.Column("closure_deadline", TS, nullable=True))
    _add_missing(_n("payment_sessions"), sa.Column("failure_cause", sa.String(48), nullable=True))
    ledger = _n("customer_transactions")
    _add_missing(
        ledger,
        sa.Column("extension_id", ID, nullable=True),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.current_timestamp()),
    )
    op.create_index(f"uq_{ledger}_extension", ledger, ["extension_id"], unique=True)
    _add_missing(
        x,
        sa.Column("expires_at", TS, nullable=True),
        sa.Column("timeout_seconds", sa.Integer(), nullable=True),
        sa.Column("via_timeout", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("reason", sa.String(16), nullable=True),
        sa.Column("failure_cause", sa.String(48), nullable=True),
    )
    _backfill_deadlines(x, seconds)
    with op.batch_alter_table(x) as batch:
        batch.alter_column("expires_at", existing_type=TS, nullable=False)
        batch.alter_column("timeout_seconds", existing_type=sa.Integer(), nullable=False)
    op.create_index(
        f"uq_{x}_pending_session", x, ["session_id"], unique=True, **_where("status = 'pending'")
    )
    op.create_index(
        f"uq_{x}_live_payment",
        x,
        ["payment_session_id"],
        unique=True,
        **_where("status IN ('pending', 'accepted')"),
    )
    op.create_index(f"ix_{x}_due", x, ["expires_at"], **_where("status = 'pending'"))
    _create_outbox_and_log()


def downgrade() -> None:
    """Back to the seed's tables; the rows the library wrote meanwhile stay."""
    if not _seed():
        return
    x = _n("session_extensions")
    op.drop_table(_n("extension_transitions"))
    op.drop_table(_n("extension_outbox"))
    for index in (f"ix_{x}_due", f"uq_{x}_live_payment", f"uq_{x}_pending_session"):
        op.drop_index(index, table_name=x)
    ledger = _n("customer_transactions")
    op.drop_index(f"uq_{ledger}_extension", table_name=ledger)
    with op.batch_alter_table(x) as batch:
        for column in ("failure_cause", "reason", "via_timeout", "timeout_seconds", "expires_at"):
            batch.drop_column(column)
    with op.batch_alter_table(ledger) as batch:
        batch.drop_column("extension_id")
    with op.batch_alter_table(_n("payment_sessions")) as batch:
        batch.drop_column("failure_cause")
    with op.batch_alter_table(_n("chat_sessions")) as batch:
        batch.drop_column("closure_deadline")
