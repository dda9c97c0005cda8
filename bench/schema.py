"""The tables the raw baselines write: the reference schema of the SQL adapter
(issue 5 / DESIGN.md), with the seed's table names, in SQLite and PostgreSQL.

The raw code must pay for what the library pays for: the same rows, the same
partial unique indexes (one pending extension per session, one live extension
per payment session) and the same due / outbox indexes.
"""

from __future__ import annotations

_TABLES = """
CREATE TABLE customers (
    id TEXT PRIMARY KEY,
    display_name TEXT NOT NULL DEFAULT ''
);
CREATE TABLE chat_sessions (
    id TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL REFERENCES customers (id),
    mitra_id TEXT NOT NULL,
    status TEXT NOT NULL,
    expires_at {ts} NOT NULL,
    closure_deadline {ts},
    topic_sensitivity TEXT
);
CREATE TABLE payment_sessions (
    id TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL REFERENCES customers (id),
    status TEXT NOT NULL,
    amount INTEGER NOT NULL,
    is_extension BOOLEAN NOT NULL DEFAULT TRUE,
    is_first_session_discount BOOLEAN NOT NULL DEFAULT FALSE,
    failure_cause TEXT
);
CREATE TABLE session_extensions (
    id TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES chat_sessions (id),
    duration_minutes INTEGER NOT NULL,
    price INTEGER NOT NULL,
    payment_session_id TEXT NOT NULL REFERENCES payment_sessions (id),
    status TEXT NOT NULL,
    requested_at {ts} NOT NULL,
    expires_at {ts} NOT NULL,
    timeout_seconds INTEGER NOT NULL,
    responded_at {ts},
    via_timeout BOOLEAN NOT NULL DEFAULT FALSE,
    reason TEXT,
    failure_cause TEXT
);
CREATE UNIQUE INDEX uq_one_pending_per_session ON session_extensions (session_id)
    WHERE status = 'pending';
CREATE UNIQUE INDEX uq_one_live_per_payment ON session_extensions (payment_session_id)
    WHERE status IN ('pending', 'accepted');
CREATE INDEX ix_extensions_due ON session_extensions (expires_at) WHERE status = 'pending';
CREATE TABLE customer_transactions (
    id {serial} PRIMARY KEY,
    customer_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    extension_id TEXT NOT NULL,
    type TEXT NOT NULL,
    amount INTEGER NOT NULL,
    created_at {ts} NOT NULL
);
CREATE TABLE extension_transitions (
    id {serial} PRIMARY KEY,
    entity TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    from_status TEXT,
    to_status TEXT NOT NULL,
    event TEXT NOT NULL,
    actor TEXT NOT NULL,
    cause TEXT,
    at {ts} NOT NULL
);
CREATE TABLE extension_outbox (
    id TEXT PRIMARY KEY,
    seq {serial} UNIQUE,
    kind TEXT NOT NULL,
    dedupe_key TEXT NOT NULL,
    payload {json} NOT NULL,
    created_at {ts} NOT NULL,
    available_at {ts} NOT NULL,
    delivered_at {ts},
    attempts INTEGER NOT NULL DEFAULT 0,
    dead BOOLEAN NOT NULL DEFAULT FALSE,
    last_error TEXT
);
CREATE INDEX ix_outbox_ready ON extension_outbox (available_at)
    WHERE delivered_at IS NULL AND NOT dead;
"""

SQLITE_DDL = (
    _TABLES.format(ts="TEXT", serial="INTEGER", json="TEXT")
    .replace("id INTEGER PRIMARY KEY", "id INTEGER PRIMARY KEY AUTOINCREMENT")
    .replace("seq INTEGER UNIQUE", "seq INTEGER")
)  # SQLite orders the outbox by rowid
POSTGRES_DDL = _TABLES.format(ts="TIMESTAMPTZ", serial="BIGSERIAL", json="JSONB")


def statements(ddl: str) -> list[str]:
    """The DDL as single statements."""
    return [s.strip() for s in ddl.split(";") if s.strip()]
