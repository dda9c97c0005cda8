"""The store over SQLAlchemy Core: opening, schema, seeding and reading back.

A unit of work (:mod:`.unit`) is one database transaction on one connection,
run by the backend's one executor (:mod:`.engine`): PostgreSQL on an
``AsyncEngine`` (asyncpg; the store's own, or a host's passed to
:meth:`SqlAlchemyStore.open`), SQLite on a sync engine driven from a worker
thread of the store.  Status changes are compare-and-set ``UPDATE … WHERE id
= … AND status = …`` (:mod:`.statements`); the partial unique indexes enforce
the uniqueness rules, and their violations come back as the same
``ExtensionError`` 409 the in-memory store raises.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, Literal, Self

from sqlalchemy import Row, and_, or_, select
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine

from ...model import PaymentSession, Session
from ...ports import OutboxMessage, StoreDump
from .dialects import postgres_engine, sqlite_engine
from .engine import Database, PostgresDatabase, SqliteDatabase
from .loads import SnapshotStatements
from .outbox import SqlOutboxStore
from .rows import (
    _extension,
    _ledger,
    _payment,
    _payment_values,
    _record,
    _session,
    _session_select,
    _session_values,
)
from .schema import Tables, build_tables
from .statements import Statements
from .unit import SqlUnitOfWork
from .urls import resolve_url

__all__ = ["SqlAlchemyStore", "SqlUnitOfWork", "StoreClock"]

StoreClock = Literal["database", "local"]


def _database(target: str | URL | AsyncEngine, tables: Tables) -> Database:
    """The executor for a URL (an engine of the store's own) or a host's engine."""
    if isinstance(target, AsyncEngine):
        if target.dialect.name != "postgresql":
            raise ValueError(
                f"an AsyncEngine for {target.dialect.name!r} cannot serve the store: pass "
                "PostgreSQL's (asyncpg), or a sqlite:// URL (SQLite runs on a thread of its own)"
            )
        return PostgresDatabase(target, tables, owns_engine=False)
    url = resolve_url(target)
    if url.get_backend_name() == "sqlite":
        return SqliteDatabase(sqlite_engine(url), tables)
    return PostgresDatabase(postgres_engine(url), tables)


class SqlAlchemyStore:
    """:class:`~extension_fsm.ports.InspectableStore` over SQLite or PostgreSQL.

    Open with :meth:`open`; close with :meth:`aclose`, or use it as an async
    context manager (``async with await SqlAlchemyStore.open(url) as store:``).
    """

    def __init__(self, db: Database, *, clock: StoreClock | None = None) -> None:
        if clock not in (None, "database", "local"):
            raise ValueError(f"clock must be 'database' or 'local', not {clock!r}")
        self._db = db
        # PostgreSQL has one clock for every worker: deadlines are judged by it,
        # and so are the outbox's leases.
        self._db_clock = db.is_postgres and clock != "local"
        self._outbox = SqlOutboxStore(db, db_clock=self._db_clock)
        self._statements = Statements(db.tables)
        self._snapshots = SnapshotStatements(
            db.tables, is_postgres=db.is_postgres, db_now=self._db_clock
        )

    @classmethod
    async def open(
        cls,
        url: str | URL | AsyncEngine,
        *,
        create_schema: bool = False,
        table_prefix: str = "",
        table_names: Mapping[str, str] | None = None,
        clock: StoreClock | None = None,
        layout: str = "default",
    ) -> SqlAlchemyStore:
        """Connect to ``url`` (``sqlite:///file.db``, ``sqlite://``, ``postgresql://…``),
        or run on a host's own PostgreSQL ``AsyncEngine`` (asyncpg): one pool for
        the host and the library; closing the store leaves that engine open.

        ``create_schema`` creates missing tables directly (tests, the CLI);
        production schemas come from the Alembic migrations.  ``clock``: whose
        time judges deadlines; ``"database"`` (the default on PostgreSQL) reads
        ``now()`` with each call's rows, so workers whose clocks disagree still
        agree on every deadline; ``"local"`` uses the service's ``Clock`` (the
        only choice on SQLite, and what tests that drive virtual time need).
        The outbox's leases follow the same clock.
        ``layout="seed"`` reads and writes the Node service's own tables (see
        ``build_tables``).  The timeouts of a URL (``?statement_timeout=`` …,
        see :class:`~.urls.PgTimeouts`) bound the store's own engine; a host's
        engine keeps the settings the host gave it.
        """
        tables = build_tables(table_prefix, table_names, layout=layout)
        store = cls(_database(url, tables), clock=clock)
        if create_schema:
            try:
                await store.create_schema(table_prefix=table_prefix)
            except BaseException:
                await store.aclose()
                raise
        return store

    async def create_schema(self, *, table_prefix: str = "") -> None:
        """Create every table and index that does not exist yet, safe from several
        instances starting at once; a schema created here is stamped with the head
        migration (``extension-fsm db upgrade`` then has nothing to do)."""
        from ...migrate import create_and_stamp

        tables = self._db.tables
        await self._db.create_schema(lambda conn: create_and_stamp(conn, tables, table_prefix))

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self, *, grace: float = 10.0) -> None:
        """Refuse new work, let the work holding a connection finish (up to
        ``grace`` seconds), then close every pooled connection of an engine the
        store created (a host's engine stays open).  Close the service first
        (:meth:`ExtensionService.aclose`) so that its background deliveries end
        before the store does."""
        await self._db.dispose(grace=grace)

    @property
    def tables(self) -> Tables:
        """The tables this store reads and writes."""
        return self._db.tables

    @property
    def database(self) -> Database:
        """The engine and transaction primitive (for tests and tools)."""
        return self._db

    @property
    def uses_database_clock(self) -> bool:
        """Whether deadlines are judged by the database's clock (see :meth:`open`)."""
        return self._db_clock

    def unit_of_work(self) -> SqlUnitOfWork:
        """A new unit of work (one transaction)."""
        return SqlUnitOfWork(self._db, self._statements, self._snapshots)

    @property
    def outbox(self) -> SqlOutboxStore:
        """The outbox as the dispatcher sees it."""
        return self._outbox

    # ------------------------------------------------------ InspectableStore

    async def seed_session(self, session: Session) -> None:
        """Insert or replace a host session and its customer's display name."""
        t = self._db.tables
        async with self.unit_of_work() as uow:
            await uow.upsert(
                t.customers,
                {"id": session.customer_id, "display_name": session.customer_display_name},
            )
            await uow.upsert(t.sessions, _session_values(session))
            await uow.commit()

    async def seed_payment(self, payment: PaymentSession) -> None:
        """Insert or replace a host payment session."""
        async with self.unit_of_work() as uow:
            await uow.upsert(self._db.tables.payments, _payment_values(payment))
            await uow.commit()

    async def dump(
        self, *, session_ids: Collection[str] | None = None, payment_ids: Collection[str] = ()
    ) -> StoreDump:
        """Every committed row, in a consistent snapshot; or only the rows of
        ``session_ids`` (see :meth:`~extension_fsm.ports.InspectableStore.dump`),
        each table read with a ``WHERE`` of its own."""
        if session_ids is not None:
            return await self._dump_of(list(session_ids), set(payment_ids))
        t = self._db.tables
        async with self.unit_of_work() as uow:
            sessions = [_session(r) for r in await uow.rows(_session_select(t))]
            payments = [_payment(r) for r in await uow.rows(select(t.payments).order_by("id"))]
            exts = [_extension(r) for r in await uow.rows(select(t.extensions).order_by("id"))]
            ledger = [_ledger(r) for r in await uow.rows(select(t.ledger).order_by("seq"))]
            log = [_record(r) for r in await uow.rows(select(t.log).order_by("seq"))]
            outbox = [_outbox_entry(r) for r in await uow.rows(select(t.outbox).order_by("seq"))]
        return StoreDump(sessions, payments, exts, ledger, log, outbox)

    async def _dump_of(self, sids: list[str], pids: set[str]) -> StoreDump:
        t = self._db.tables
        async with self.unit_of_work() as uow:
            q = _session_select(t).where(t.sessions.c.id.in_(sids))
            sessions = [_session(r) for r in await uow.rows(q)]
            q = select(t.extensions).where(t.extensions.c.session_id.in_(sids)).order_by("id")
            exts = [_extension(r) for r in await uow.rows(q)]
            pids |= {e.payment_session_id for e in exts}
            q = select(t.payments).where(t.payments.c.id.in_(sorted(pids))).order_by("id")
            payments = [_payment(r) for r in await uow.rows(q)]
            q = select(t.ledger).where(t.ledger.c.session_id.in_(sids)).order_by("seq")
            ledger = [_ledger(r) for r in await uow.rows(q)]
            owners = {"session": sids, "payment": sorted(pids), "extension": [e.id for e in exts]}
            owned = or_(
                *(and_(t.log.c.entity == k, t.log.c.entity_id.in_(v)) for k, v in owners.items())
            )
            q = select(t.log).where(owned).order_by("seq")
            log = [_record(r) for r in await uow.rows(q)]
            session_of = t.outbox.c.payload["session_id"].as_string()
            q = select(t.outbox).where(session_of.in_(sids)).order_by("seq")
            outbox = [_outbox_entry(r) for r in await uow.rows(q)]
        return StoreDump(sessions, payments, exts, ledger, log, outbox)


def _outbox_entry(r: Row[Any]) -> tuple[OutboxMessage, bool]:
    """An outbox row as a dump holds it: the message and whether it was delivered."""
    message = OutboxMessage(
        r.id, r.kind, r.dedupe_key, r.payload, r.created_at, r.attempts, r.lane, r.seq
    )
    return message, r.delivered_at is not None
