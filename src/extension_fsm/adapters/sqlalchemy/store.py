"""The store over SQLAlchemy Core: opening, schema, seeding and reading back.

A unit of work (:mod:`.unit`) is one database transaction on one connection.
Status changes are compare-and-set ``UPDATE … WHERE id = … AND status = …``
(:mod:`.repositories`, :mod:`.batch`); the partial unique indexes enforce the
uniqueness rules, and their violations come back as the same
``ExtensionError`` 409 the in-memory store raises.

On PostgreSQL over asyncpg (``postgresql://``, ``+asyncpg``) the units of
work and the outbox run on asyncpg directly (:mod:`.pg_direct`): statements
compiled once by SQLAlchemy, a pool of ``pool_size`` connections kept open.
``?direct=0`` in the URL (or ``open(..., direct=False)``) keeps every call on
SQLAlchemy's engine instead; ``?pool_size=N`` sizes the direct path's pool.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping
from typing import Any, Literal, Self

from sqlalchemy import Row, and_, or_, select
from sqlalchemy.engine import URL

from ...model import PaymentSession, Session
from ...ports import OutboxMessage, StoreDump
from .engine import Database, create_engine
from .outbox import SqlOutboxStore
from .pg_direct import DEFAULT_POOL_SIZE, PgDirect
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
from .unit import SqlUnitOfWork
from .urls import resolve_url

__all__ = ["SqlAlchemyStore", "SqlUnitOfWork", "StoreClock"]

StoreClock = Literal["database", "local"]

#: URL query parameters the store reads itself (never passed to the driver)
_STORE_PARAMS = ("direct", "pool_size")


def _store_options(url: URL, direct: bool | None) -> tuple[URL, bool, int]:
    """``url`` without the store's own parameters; whether the direct path is on
    (``direct`` wins over ``?direct=``); the direct pool's size."""
    query = {k: (v[-1] if isinstance(v, tuple) else v) for k, v in url.query.items()}
    asyncpg = url.drivername == "postgresql+asyncpg"
    if direct is None:
        raw = query.get("direct", "1")
        if raw not in ("0", "1", "true", "false"):
            raise ValueError(f"direct must be 0 or 1, not {raw!r}")
        direct = raw in ("1", "true") and asyncpg
    elif direct and not asyncpg:
        raise ValueError("direct=True needs PostgreSQL on asyncpg (postgresql:// or +asyncpg)")
    raw_size = query.get("pool_size", str(DEFAULT_POOL_SIZE))
    try:
        pool_size = int(raw_size)
    except ValueError:
        raise ValueError(f"pool_size must be a whole number, not {raw_size!r}") from None
    return url.difference_update_query(_STORE_PARAMS), direct, pool_size


class SqlAlchemyStore:
    """:class:`~extension_fsm.ports.InspectableStore` over SQLite or PostgreSQL.

    Open with :meth:`open`; close with :meth:`aclose`, or use it as an async
    context manager (``async with await SqlAlchemyStore.open(url) as store:``).
    """

    def __init__(
        self, db: Database, *, clock: StoreClock | None = None, direct: PgDirect | None = None
    ) -> None:
        self._db = db
        self._direct = direct
        if clock not in (None, "database", "local"):
            raise ValueError(f"clock must be 'database' or 'local', not {clock!r}")
        # PostgreSQL has one clock for every worker: deadlines are judged by it,
        # and so are the outbox's leases.
        self._db_clock = db.is_postgres and clock != "local"
        self._outbox = SqlOutboxStore(db, direct=direct, db_clock=self._db_clock)

    @classmethod
    async def open(
        cls,
        url: str | URL,
        *,
        create_schema: bool = False,
        table_prefix: str = "",
        table_names: Mapping[str, str] | None = None,
        clock: StoreClock | None = None,
        layout: str = "default",
        direct: bool | None = None,
    ) -> SqlAlchemyStore:
        """Connect to ``url`` (``sqlite:///file.db``, ``sqlite://``, ``postgresql://…``).

        ``create_schema`` creates missing tables directly (tests, the CLI);
        production schemas come from the Alembic migrations.  ``clock``: whose
        time judges deadlines; ``"database"`` (the default on PostgreSQL) reads
        ``now()`` with each call's rows, so workers whose clocks disagree still
        agree on every deadline; ``"local"`` uses the service's ``Clock`` (the
        only choice on SQLite, and what tests that drive virtual time need).
        The outbox's leases follow the same clock.
        ``layout="seed"`` reads and writes the Node service's own tables (see
        ``build_tables``).  ``direct``: PostgreSQL on asyncpg runs its units of
        work and outbox on the driver directly (:mod:`.pg_direct`; the default,
        unless the URL says ``?direct=0``); ``False`` keeps SQLAlchemy's engine.
        """
        resolved, on, pool_size = _store_options(resolve_url(url), direct)
        tables = build_tables(table_prefix, table_names, layout=layout)
        db = Database(create_engine(resolved), tables)
        pg = None
        if on:
            pg = PgDirect(resolved, db.engine.dialect, db.translate, pool_size=pool_size)
        store = cls(db, clock=clock, direct=pg)
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
        ``grace`` seconds), then close every pooled connection (the direct
        path's pool and the engine's).  Close the service first
        (:meth:`ExtensionService.aclose`) so that its background deliveries end
        before the store does."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(grace, 0.0)
        try:
            if self._direct is not None:
                await self._direct.aclose(grace=grace)
        finally:
            # one grace for both pools, not one each
            await self._db.dispose(grace=max(deadline - loop.time(), 0.0))

    @property
    def tables(self) -> Tables:
        """The tables this store reads and writes."""
        return self._db.tables

    @property
    def database(self) -> Database:
        """The engine and transaction primitive (for tests and tools)."""
        return self._db

    @property
    def is_direct(self) -> bool:
        """Whether units of work run on asyncpg directly (see :meth:`open`)."""
        return self._direct is not None

    @property
    def uses_database_clock(self) -> bool:
        """Whether deadlines are judged by the database's clock (see :meth:`open`)."""
        return self._db_clock

    def unit_of_work(self) -> SqlUnitOfWork:
        """A new unit of work (one transaction)."""
        return SqlUnitOfWork(self._db, db_clock=self._db_clock, direct=self._direct)

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
