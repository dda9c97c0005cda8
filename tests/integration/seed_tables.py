"""The Node service's tables and rows as it left them, for the seed cutover tests.

The tables are built with raw DDL, from what the seed's SQL reads and writes
(not from our metadata): ids the database generates (``RETURNING id``, so
``uuid`` on PostgreSQL), ``session_extensions`` with
``requested_duration_minutes`` / ``requested_price`` / ``payment_session_id`` /
``requested_at DEFAULT now()`` / ``responded_at`` and no deadline, a ledger
that is ``INSERT … (customer_id, session_id, type, amount)``.  The two columns
the extension code does not show, ``chat_sessions.expires_at`` (the session
timer's deadline it extends) and ``payment_sessions.amount`` (what was paid),
are the payment and timer services' own.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.config import Config

from alembic import command

ROOT = Path(__file__).resolve().parents[2]
CUTOVER = datetime(2026, 3, 1, 12, 0, 0, 250_000, tzinfo=UTC)

_PG_DDL = [
    "CREATE TABLE customers (id uuid PRIMARY KEY DEFAULT gen_random_uuid(),"
    " display_name text NOT NULL)",
    "CREATE TABLE chat_sessions (id uuid PRIMARY KEY DEFAULT gen_random_uuid(),"
    " customer_id uuid NOT NULL REFERENCES customers(id), mitra_id uuid NOT NULL,"
    " status varchar(32) NOT NULL, topic_sensitivity varchar(32),"
    " expires_at timestamptz NOT NULL)",
    "CREATE TABLE payment_sessions (id uuid PRIMARY KEY DEFAULT gen_random_uuid(),"
    " customer_id uuid NOT NULL REFERENCES customers(id), status varchar(32) NOT NULL,"
    " amount integer NOT NULL, is_extension boolean NOT NULL DEFAULT false,"
    " is_first_session_discount boolean NOT NULL DEFAULT false)",
    "CREATE TABLE customer_transactions (id uuid PRIMARY KEY DEFAULT gen_random_uuid(),"
    " customer_id uuid NOT NULL, session_id uuid NOT NULL, type varchar(32) NOT NULL,"
    " amount integer NOT NULL, created_at timestamptz NOT NULL DEFAULT now())",
    "CREATE TABLE session_extensions (id uuid PRIMARY KEY DEFAULT gen_random_uuid(),"
    " session_id uuid NOT NULL REFERENCES chat_sessions(id),"
    " requested_duration_minutes integer NOT NULL, requested_price integer NOT NULL,"
    " status varchar(32) NOT NULL DEFAULT 'pending',"
    " requested_at timestamptz NOT NULL DEFAULT now(), responded_at timestamptz,"
    " payment_session_id uuid REFERENCES payment_sessions(id))",
    "CREATE INDEX session_extensions_session_id_idx ON session_extensions (session_id)",
]
_SQLITE_DDL = [
    "CREATE TABLE customers (id TEXT PRIMARY KEY, display_name TEXT NOT NULL)",
    "CREATE TABLE chat_sessions (id TEXT PRIMARY KEY,"
    " customer_id TEXT NOT NULL REFERENCES customers(id), mitra_id TEXT NOT NULL,"
    " status TEXT NOT NULL, topic_sensitivity TEXT, expires_at TIMESTAMP NOT NULL)",
    "CREATE TABLE payment_sessions (id TEXT PRIMARY KEY,"
    " customer_id TEXT NOT NULL REFERENCES customers(id), status TEXT NOT NULL,"
    " amount INTEGER NOT NULL, is_extension BOOLEAN NOT NULL DEFAULT 0,"
    " is_first_session_discount BOOLEAN NOT NULL DEFAULT 0)",
    "CREATE TABLE customer_transactions (id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " customer_id TEXT NOT NULL, session_id TEXT NOT NULL, type TEXT NOT NULL,"
    " amount INTEGER NOT NULL, created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP)",
    "CREATE TABLE session_extensions (id TEXT PRIMARY KEY,"
    " session_id TEXT NOT NULL REFERENCES chat_sessions(id),"
    " requested_duration_minutes INTEGER NOT NULL, requested_price INTEGER NOT NULL,"
    " status TEXT NOT NULL DEFAULT 'pending',"
    " requested_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, responded_at TIMESTAMP,"
    " payment_session_id TEXT REFERENCES payment_sessions(id))",
    "CREATE INDEX session_extensions_session_id_idx ON session_extensions (session_id)",
]


def seed_id(name: str) -> str:
    """A stable uuid per name: the seed's ids are the database's uuids."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"seed-cutover/{name}"))


C, M_ON, M_OFF = seed_id("customer"), seed_id("mitra-online"), seed_id("mitra-offline")
S = {
    k: seed_id(f"session-{k}") for k in ("due", "later", "accepted", "rejected", "timeout", "free")
}
# "free": a request from before payment sessions were required (the seed's
# ``if (extension.payment_session_id)``): no payment behind it.
P = {k: seed_id(f"payment-{k}") for k in S if k != "free"}
E = {k: seed_id(f"extension-{k}") for k in S}
SESSION_EXPIRY = CUTOVER + timedelta(minutes=2)


def _seed_rows() -> dict[str, list[dict[str, Any]]]:
    """What the seed left: two pending (one long due, one due 6 s after cutover),
    one accepted with its ledger row, one rejected, one timed out."""

    def ago(seconds: float) -> datetime:
        return CUTOVER - timedelta(seconds=seconds)

    sessions = {
        "due": ("extending", M_ON),
        "later": ("extending", M_OFF),
        "accepted": ("active", M_ON),
        "rejected": ("closing", M_ON),
        "timeout": ("closing", M_OFF),
        "free": ("extending", M_ON),
    }
    payments = {
        "due": "confirmed",
        "later": "confirmed",
        "accepted": "consumed",
        "rejected": "failed",
        "timeout": "failed",
    }
    extensions = {  # status, requested (seconds before cutover), responded
        "due": ("pending", 30, None),
        "later": ("pending", 4, None),
        "accepted": ("accepted", 600, 595),
        "rejected": ("rejected", 500, 497),
        "timeout": ("timeout", 400, 390),
        "free": ("pending", 60, None),
    }
    return {
        "customers": [{"id": C, "display_name": "Rina"}],
        "chat_sessions": [
            {
                "id": S[k],
                "customer_id": C,
                "mitra_id": mitra,
                "status": status,
                "topic_sensitivity": None,
                "expires_at": SESSION_EXPIRY,
            }
            for k, (status, mitra) in sessions.items()
        ],
        "payment_sessions": [
            {
                "id": P[k],
                "customer_id": C,
                "status": status,
                "amount": 15000,
                "is_extension": True,
                "is_first_session_discount": False,
            }
            for k, status in payments.items()
        ],
        "customer_transactions": [
            {
                "customer_id": C,
                "session_id": S["accepted"],
                "type": "extension",
                "amount": 15000,
                "created_at": ago(595),
            }
        ],
        "session_extensions": [
            {
                "id": E[k],
                "session_id": S[k],
                "requested_duration_minutes": 15,
                "requested_price": 15000,
                "status": status,
                "requested_at": ago(requested),
                "responded_at": None if responded is None else ago(responded),
                "payment_session_id": P.get(k),
            }
            for k, (status, requested, responded) in extensions.items()
        ],
    }


def sync_url(url: str) -> str:
    return url.replace("postgresql://", "postgresql+psycopg://", 1)


def _sqlite_value(value: Any) -> Any:
    # As a naive UTC text, the way timestamps sit in a SQLite file.
    if isinstance(value, datetime):
        return value.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ")
    return value


def seed_ddl(*, sqlite: bool) -> list[str]:
    """The seed's tables as built by :func:`build_seed_database` by default."""
    return list(_SQLITE_DDL if sqlite else _PG_DDL)


def retyped(ddl: list[str], table: str, column: str, old: str, new: str) -> list[str]:
    """``ddl`` with ``table.column`` declared ``new`` instead of ``old``."""
    out = []
    for statement in ddl:
        if statement.startswith(f"CREATE TABLE {table} "):
            assert f" {column} {old}" in statement, (table, column, old)
            statement = statement.replace(f" {column} {old}", f" {column} {new}", 1)
        out.append(statement)
    assert out != ddl, (table, column)
    return out


#: the zone of the host's PostgreSQL server (and so of every session on it)
HOST_ZONE = "Asia/Jakarta"


def host_typed_ddl() -> list[str]:
    """The seed's PostgreSQL tables as a host has them: money as
    ``numeric(12,2)``, times as ``timestamp`` without time zone."""
    out = []
    for ddl in _PG_DDL:
        ddl = ddl.replace("timestamptz", "timestamp")
        for money in ("amount integer", "requested_price integer"):
            ddl = ddl.replace(money, money.replace("integer", "numeric(12,2)"))
        out.append(ddl)
    return out


def set_server_zone(url: str, zone: str = HOST_ZONE) -> None:
    """Every later session on the database at ``url`` runs in ``zone``, as on a
    server whose ``timezone`` setting is ``zone``."""
    import psycopg

    name = sa.engine.make_url(url).database
    admin = sa.engine.make_url(url).set(drivername="postgresql", database="postgres")
    with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as conn:
        conn.execute(f"ALTER DATABASE \"{name}\" SET timezone TO '{zone}'")


def build_seed_database(url: str, ddl: list[str] | None = None) -> None:
    """The seed's tables (``ddl``, by default the engine's from above) and rows,
    written with plain SQL."""
    engine = sa.create_engine(sync_url(url))
    sqlite = engine.dialect.name == "sqlite"
    try:
        with engine.begin() as conn:
            for statement in ddl or (_SQLITE_DDL if sqlite else _PG_DDL):
                conn.execute(sa.text(statement))
            for table, rows in _seed_rows().items():
                columns = list(rows[0])
                sql = (
                    f"INSERT INTO {table} ({', '.join(columns)}) "
                    f"VALUES ({', '.join(':' + c for c in columns)})"
                )
                if sqlite:
                    rows = [{k: _sqlite_value(v) for k, v in r.items()} for r in rows]
                conn.execute(sa.text(sql), rows)
    finally:
        engine.dispose()


class _XArgs:
    def __init__(self, x: list[str]) -> None:
        self.x = x


def alembic(url: str, monkeypatch: pytest.MonkeyPatch, *args: str, **x: str) -> None:
    monkeypatch.setenv("EXTENSION_FSM_DATABASE_URL", url)
    opts = _XArgs([f"{k}={v}" for k, v in {"layout": "seed", **x}.items()])
    cfg = Config(str(ROOT / "alembic.ini"), cmd_opts=opts)
    getattr(command, args[0])(cfg, *args[1:])


def cut_over(url: str, monkeypatch: pytest.MonkeyPatch, timeout: str = "10") -> None:
    """What a host runs: stamp the base the seed's tables stand for, then upgrade."""
    alembic(url, monkeypatch, "stamp", "0001")
    alembic(url, monkeypatch, "upgrade", "head", extension_timeout_seconds=timeout)


def columns_of(url: str, table: str) -> set[str]:
    engine = sa.create_engine(sync_url(url))
    try:
        return {c["name"] for c in sa.inspect(engine).get_columns(table)}
    finally:
        engine.dispose()
