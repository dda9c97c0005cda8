"""The reference schema as SQLAlchemy Core tables, with host-mappable names.

:func:`build_tables` returns the seven tables under their default names, or
prefixed (``table_prefix``) or renamed one by one (``table_names``, keyed by
the default name), or laid out as the Node service's own tables
(``layout="seed"``).  Index names follow the table names so that two prefixed
schemas can live in one PostgreSQL schema.  The Alembic migrations under
``alembic/`` create exactly these tables; a test fails when the two drift.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    text,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import TypeDecorator, UserDefinedType

from ...money import whole_money

__all__ = [
    "DEFAULT_TABLE_NAMES",
    "LAYOUTS",
    "Money",
    "Tables",
    "UTCDateTime",
    "build_tables",
]

DEFAULT_TABLE_NAMES: tuple[str, ...] = (
    "customers",
    "chat_sessions",
    "payment_sessions",
    "customer_transactions",
    "extensions",
    "extension_outbox",
    "extension_transitions",
)
"""The keys of ``table_names`` and the names used when none is mapped."""

# BIGINT on PostgreSQL; plain INTEGER on SQLite, where only ``INTEGER PRIMARY
# KEY`` is the auto-incrementing rowid.
_SEQ = BigInteger().with_variant(Integer(), "sqlite")
_ID = String(64)
_STATUS = String(16)


class _HostId(UserDefinedType[str]):
    """A host id under the seed layout: ``text`` or ``uuid``, read back as ``str``.

    No cast is written around its parameters (``String`` gets ``$1::VARCHAR``
    on PostgreSQL, which a ``uuid`` column refuses), so the server types each
    one from its column; a ``uuid`` comes back as its canonical text.
    """

    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        """The type ``create_schema`` gives new tables (tests, the CLI)."""
        return "VARCHAR(64)"

    def result_processor(self, dialect: Dialect, coltype: object) -> Any:
        """``str`` of whatever the driver returns (``asyncpg`` has its own UUID)."""

        def process(value: object) -> str | None:
            return None if value is None else str(value)

        return process


class _Zoned(FunctionElement[datetime]):
    """A timestamp as ``timestamptz`` on PostgreSQL (see :class:`UTCDateTime`);
    the expression itself elsewhere."""

    name = "extension_fsm_zoned"
    inherit_cache = True

    def __init__(self, expression: Any, type_: UTCDateTime) -> None:
        super().__init__(expression)
        # the column's own type, so rows read through the cast are processed by it
        self.type = type_


@compiles(_Zoned)
def _zoned_plain(element: _Zoned, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.clauses, **kw)


@compiles(_Zoned, "postgresql")
def _zoned_pg(element: _Zoned, compiler: SQLCompiler, **kw: Any) -> str:
    return f"CAST({compiler.process(element.clauses, **kw)} AS TIMESTAMP WITH TIME ZONE)"


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every engine.

    PostgreSQL: the library's own columns are ``timestamptz``; a host's may be
    ``timestamp`` without time zone (local times, as the Node service's
    tables in a server whose zone is ``Asia/Jakarta``).  Every value is read
    through ``CAST(column AS timestamptz)`` and every parameter is sent as
    ``timestamptz``, so PostgreSQL itself converts between the instant and a
    local column in the zone of the database session (the ``TimeZone``
    setting: the server's, or what ``ALTER ROLE … SET timezone`` gives the
    library's role), exactly as it does for the host's own SQL.  On a
    ``timestamptz`` column both casts change nothing.

    SQLite has no time zones, so the value is stored as naive UTC
    (fixed-width text, so ordering holds) and UTC is re-attached on the way
    out.  Naive datetimes are refused on the way in.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def bind_expression(self, bindvalue: Any) -> ColumnElement[datetime]:
        """The parameter as ``timestamptz`` (PostgreSQL), whatever the column."""
        return _Zoned(bindvalue, self)

    def column_expression(self, column: Any) -> ColumnElement[datetime]:
        """The column as ``timestamptz`` (PostgreSQL): a local ``timestamp``
        is read in the session's zone, not taken for UTC."""
        return _Zoned(column, self)

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Normalise to UTC; strip the zone only where the engine cannot keep it."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: extension_fsm stores timezone-aware UTC only")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Always aware, always UTC."""
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Money(TypeDecorator[int]):
    """An amount of money in whole currency units, in any exact numeric column.

    The library creates ``BIGINT`` columns; a host's may be ``integer``,
    ``bigint`` or ``numeric`` (``numeric(12,2)``, as the Node service's).
    Values read come back as ``int`` exactly (:func:`~extension_fsm.money.whole_money`; never
    through ``float``), and an ``int`` written into a ``numeric`` column is
    stored exactly (``15000`` is ``15000.00``).  A stored fraction of a unit
    cannot be an amount the library decides on: reading it raises
    ``ValueError`` (the migration refuses such rows before a cutover).
    """

    impl = BigInteger()
    cache_ok = True

    def process_bind_param(self, value: object, dialect: Dialect) -> int | None:
        """Whole units only (an exact ``Decimal`` is taken as its ``int``)."""
        return None if value is None else whole_money(value)

    def process_result_value(self, value: object, dialect: Dialect) -> int | None:
        """The stored amount as an ``int``, exactly."""
        return None if value is None else whole_money(value)


@dataclass(frozen=True, slots=True)
class Tables:
    """The tables of one (possibly prefixed or mapped) schema."""

    metadata: MetaData
    customers: Table
    sessions: Table
    payments: Table
    ledger: Table
    extensions: Table
    outbox: Table
    log: Table

    @property
    def pending_session_index(self) -> str:
        """The partial unique index: one pending extension per session."""
        return f"uq_{self.extensions.name}_pending_session"

    @property
    def live_payment_index(self) -> str:
        """The partial unique index: one pending-or-accepted extension per payment."""
        return f"uq_{self.extensions.name}_live_payment"

    @property
    def ledger_extension_index(self) -> str:
        """The unique index: at most one ledger row per extension."""
        return f"uq_{self.ledger.name}_extension"


LAYOUTS: tuple[str, ...] = ("default", "seed")
"""``default``: the reference schema.  ``seed``: the Node service's own tables
(``session_extensions`` with ``requested_duration_minutes``,
``requested_price``; a ledger keyed by ``id``), after the seed cutover
migration added what the library needs."""

# The seed's names where they differ from ours (table key -> table; column key -> column).
_SEED_TABLES = {"extensions": "session_extensions"}
_SEED_COLUMNS = {
    "extensions": {"duration_minutes": "requested_duration_minutes", "price": "requested_price"},
    "customer_transactions": {"seq": "id"},
}


def _names(
    table_prefix: str, table_names: Mapping[str, str] | None, layout: str = "default"
) -> dict[str, str]:
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; expected one of {LAYOUTS}")
    mapped = dict(table_names or {})
    unknown = set(mapped) - set(DEFAULT_TABLE_NAMES)
    if unknown:
        raise ValueError(f"unknown table keys {sorted(unknown)}; expected {DEFAULT_TABLE_NAMES}")
    defaults = _SEED_TABLES if layout == "seed" else {}
    return {
        key: mapped.get(key, table_prefix + defaults.get(key, key)) for key in DEFAULT_TABLE_NAMES
    }


def _column(layout: str, table_key: str, key: str, *args: Any, **kwargs: Any) -> Column[Any]:
    """Column ``key`` of ``table_key``, under the layout's name for it.

    The key stays ours (``c.duration_minutes``), so nothing else changes with
    the layout; only the SQL says ``requested_duration_minutes``.
    """
    name = _SEED_COLUMNS.get(table_key, {}).get(key, key) if layout == "seed" else key
    return Column(name, *args, key=key, **kwargs)


def _partial(sql: str) -> dict[str, Any]:
    clause = text(sql)
    return {"postgresql_where": clause, "sqlite_where": clause}


def build_tables(
    table_prefix: str = "",
    table_names: Mapping[str, str] | None = None,
    *,
    layout: str = "default",
) -> Tables:
    """The reference schema; ``table_names`` wins over ``table_prefix`` per table.

    ``layout="seed"`` names the extension table and its columns as the Node
    service did (see :data:`LAYOUTS`); every column keeps its key.
    """
    n = _names(table_prefix, table_names, layout)
    md = MetaData()
    ident = _HostId() if layout == "seed" else _ID
    customers = Table(
        n["customers"],
        md,
        Column("id", ident, primary_key=True),
        Column("display_name", String(255), nullable=False, server_default=""),
    )
    sessions = Table(
        n["chat_sessions"],
        md,
        Column("id", ident, primary_key=True),
        Column("customer_id", ident, nullable=False),
        Column("mitra_id", ident, nullable=False),
        Column("status", _STATUS, nullable=False),
        Column("expires_at", UTCDateTime(), nullable=False),
        Column("closure_deadline", UTCDateTime(), nullable=True),
        Column("topic_sensitivity", String(64), nullable=True),
    )
    payments = Table(
        n["payment_sessions"],
        md,
        Column("id", ident, primary_key=True),
        Column("customer_id", ident, nullable=False),
        Column("status", _STATUS, nullable=False),
        Column("amount", Money(), nullable=False),
        Column("is_extension", Boolean(), nullable=False),
        Column("is_first_session_discount", Boolean(), nullable=False),
        Column("failure_cause", String(48), nullable=True),
    )
    ledger = Table(
        n["customer_transactions"],
        md,
        _column(layout, "customer_transactions", "seq", _SEQ, primary_key=True, autoincrement=True),
        Column("customer_id", ident, nullable=False),
        Column("session_id", ident, nullable=False),
        Column("extension_id", ident, nullable=True),
        Column("type", String(32), nullable=False),
        Column("amount", Money(), nullable=False),
        Column("created_at", UTCDateTime(), nullable=False),
    )
    Index(f"uq_{ledger.name}_extension", ledger.c.extension_id, unique=True)
    extensions = Table(
        n["extensions"],
        md,
        Column("id", ident, primary_key=True),
        Column("session_id", ident, nullable=False),
        _column(layout, "extensions", "duration_minutes", Integer(), nullable=False),
        _column(layout, "extensions", "price", Money(), nullable=False),
        Column("payment_session_id", ident, nullable=False),
        Column("status", _STATUS, nullable=False),
        Column("requested_at", UTCDateTime(), nullable=False),
        Column("expires_at", UTCDateTime(), nullable=False),
        Column("timeout_seconds", Integer(), nullable=False),
        Column("responded_at", UTCDateTime(), nullable=True),
        Column("via_timeout", Boolean(), nullable=False),
        Column("reason", String(16), nullable=True),
        Column("failure_cause", String(48), nullable=True),
        # A pending row the sweep could not decide: skipped until this time
        # (backoff), how many times so far, and why (the last error).
        Column("set_aside_until", UTCDateTime(), nullable=True),
        Column("set_aside_count", Integer(), nullable=False, server_default="0"),
        Column("set_aside_reason", Text(), nullable=True),
    )
    x = extensions.name
    Index(
        f"uq_{x}_pending_session",
        extensions.c.session_id,
        unique=True,
        **_partial("status = 'pending'"),
    )
    Index(
        f"uq_{x}_live_payment",
        extensions.c.payment_session_id,
        unique=True,
        **_partial("status IN ('pending', 'accepted')"),
    )
    # The sweep's index: its size is what is pending, its scan is what is due.
    Index(f"ix_{x}_due", extensions.c.expires_at, **_partial("status = 'pending'"))
    outbox = Table(
        n["extension_outbox"],
        md,
        Column("seq", _SEQ, primary_key=True, autoincrement=True),
        Column("id", _ID, nullable=False, unique=True),
        Column("kind", String(32), nullable=False),
        Column("dedupe_key", String(255), nullable=False),
        Column("payload", JSON(), nullable=False),
        Column("created_at", UTCDateTime(), nullable=False),
        Column("available_at", UTCDateTime(), nullable=False),
        Column("attempts", Integer(), nullable=False, server_default="0"),
        Column("delivered_at", UTCDateTime(), nullable=True),
        Column("dead_at", UTCDateTime(), nullable=True),
        Column("last_error", Text(), nullable=True),
        # rows of one lane are delivered one at a time, in order (NULL: no order)
        Column("lane", String(96), nullable=True),
        # ``seq`` is each command's fence (a receiver drops a command not newer
        # than what it holds): SQLite must never hand a number out twice
        sqlite_autoincrement=True,
    )
    Index(
        f"ix_{outbox.name}_undelivered",
        outbox.c.seq,
        **_partial("delivered_at IS NULL AND dead_at IS NULL"),
    )
    Index(
        f"ix_{outbox.name}_lane",
        outbox.c.lane,
        outbox.c.seq,
        **_partial("lane IS NOT NULL AND delivered_at IS NULL AND dead_at IS NULL"),
    )
    log = Table(
        n["extension_transitions"],
        md,
        Column("seq", _SEQ, primary_key=True, autoincrement=True),
        Column("entity", String(16), nullable=False),
        Column("entity_id", _ID, nullable=False),
        Column("from_status", _STATUS, nullable=True),
        Column("to_status", _STATUS, nullable=False),
        Column("event", String(64), nullable=False),
        Column("cause", String(64), nullable=True),
        Column("actor", String(32), nullable=False),
        Column("at", UTCDateTime(), nullable=False),
    )
    Index(f"ix_{log.name}_entity", log.c.entity, log.c.entity_id)
    return Tables(md, customers, sessions, payments, ledger, extensions, outbox, log)
