"""Durable storage: SQLAlchemy 2 over SQLite (embedded default) or PostgreSQL.

``store = await SqlAlchemyStore.open(url)`` with ``sqlite:///file.db`` (a file
in WAL mode), ``sqlite://`` (in memory, one shared connection) or
``postgresql://…`` (asyncpg), or ``SqlAlchemyStore.open(engine)`` with a
host's own PostgreSQL ``AsyncEngine``; ``await store.aclose()`` when done.
One executor per backend, both through SQLAlchemy (:mod:`.engine`).  It implements
:class:`~extension_fsm.ports.Store` (with ``store.outbox``, the
:class:`~extension_fsm.ports.OutboxStore`) and
:class:`~extension_fsm.ports.InspectableStore`.

Schema (see :mod:`.schema`; created by ``alembic upgrade head``, or by
``open(url, create_schema=True)`` for tests and tools):

- host rows the flow reads and writes: ``customers`` (id, display_name),
  ``chat_sessions`` (id, customer_id, mitra_id, status, expires_at,
  closure_deadline, topic_sensitivity), ``payment_sessions`` (id,
  customer_id, status, amount, is_extension, is_first_session_discount,
  failure_cause), ``customer_transactions`` (the ledger: customer_id,
  session_id, extension_id, type, amount, created_at);
- the library's own: ``extensions`` (every field of
  :class:`~extension_fsm.model.Extension`; partial unique indexes for one
  pending per session and one pending-or-accepted per payment session, and a
  partial index on ``expires_at`` of pending rows for the sweep),
  ``extension_outbox`` (seq, id, kind, dedupe_key, payload, created_at,
  available_at, attempts, delivered_at, dead_at, last_error) and
  ``extension_transitions`` (entity, entity_id, from_status, to_status,
  event, cause, actor, at).

Mapping a host's tables: ``table_prefix="fsm_"`` prefixes every table (and
its indexes); ``table_names={"chat_sessions": "sessions", ...}`` renames
single tables (keys are the default names above; a mapping wins over the
prefix).  The columns named above must exist with those names and
compatible types; a host whose columns differ points the adapter at views.
Alembic takes the same settings: ``alembic -x table_prefix=fsm_ upgrade head``.

Timestamps are timezone-aware UTC on the way in and out (naive UTC text on
SQLite).  Driver errors are translated at this edge: uniqueness violations
become ``ExtensionError`` 409, lost races ``ConcurrencyConflict``, anything
else :class:`StorageError`.
"""

from __future__ import annotations

from .engine import StorageError
from .outbox import SqlOutboxStore
from .schema import DEFAULT_TABLE_NAMES, Tables, build_tables
from .store import SqlAlchemyStore, SqlUnitOfWork
from .urls import resolve_url, to_async_url

__all__ = [
    "DEFAULT_TABLE_NAMES",
    "SqlAlchemyStore",
    "SqlOutboxStore",
    "SqlUnitOfWork",
    "StorageError",
    "Tables",
    "build_tables",
    "resolve_url",
    "to_async_url",
]
