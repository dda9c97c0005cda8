"""The store and its unit of work over SQLAlchemy Core.

A unit of work is one database transaction on one connection.  Status
changes are compare-and-set ``UPDATE … WHERE id = … AND status = …``; the
partial unique indexes enforce the uniqueness rules, and their violations
come back as the same ``ExtensionError`` 409 the in-memory store raises.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Literal, Self

from sqlalchemy import Row, Select, bindparam, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError

from ...model import (
    Extension,
    LedgerEntry,
    PaymentSession,
    Session,
    TransitionRecord,
    set_aside_delay,
)
from ...ports import DecisionWriter, OutboxMessage, SnapshotLoader, StoreDump
from ..rowwise import RowWriter
from .batch import BatchPart, write_batch
from .engine import Database, InlineConnection, TxConnection, create_engine
from .loads import SqlSnapshotLoader
from .outbox import SqlOutboxStore
from .rows import (
    _extension,
    _extension_values,
    _ledger,
    _ledger_values,
    _outbox_values,
    _payment,
    _payment_values,
    _record,
    _record_values,
    _session,
    _session_select,
    _session_values,
)
from .schema import Tables, build_tables
from .sqlite_direct import NOT_DIRECT, first_row, write_batch_sqlite
from .statements import PENDING, statements

__all__ = ["SqlAlchemyStore", "SqlUnitOfWork", "StoreClock"]

StoreClock = Literal["database", "local"]


class SqlAlchemyStore:
    """:class:`~extension_fsm.ports.InspectableStore` over SQLite or PostgreSQL.

    Open with :meth:`open`; close with :meth:`aclose`.
    """

    def __init__(self, db: Database, *, clock: StoreClock | None = None) -> None:
        self._db = db
        self._outbox = SqlOutboxStore(db)
        if clock not in (None, "database", "local"):
            raise ValueError(f"clock must be 'database' or 'local', not {clock!r}")
        # PostgreSQL has one clock for every worker: deadlines are judged by it.
        self._db_clock = db.is_postgres and clock != "local"

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
    ) -> SqlAlchemyStore:
        """Connect to ``url`` (``sqlite:///file.db``, ``sqlite://``, ``postgresql://…``).

        ``create_schema`` creates missing tables directly (tests, the CLI);
        production schemas come from the Alembic migrations.  ``clock``: whose
        time judges deadlines; ``"database"`` (the default on PostgreSQL) reads
        ``now()`` with each call's rows, so workers whose clocks disagree still
        agree on every deadline; ``"local"`` uses the service's ``Clock`` (the
        only choice on SQLite, and what tests that drive virtual time need).
        ``layout="seed"`` reads and writes the Node service's own tables (see
        ``build_tables``).
        """
        tables = build_tables(table_prefix, table_names, layout=layout)
        store = cls(Database(create_engine(url), tables), clock=clock)
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
        from ...db import create_and_stamp

        tables = self._db.tables
        await self._db.create_schema(lambda conn: create_and_stamp(conn, tables, table_prefix))

    async def aclose(self, *, grace: float = 10.0) -> None:
        """Refuse new work, let the work holding a connection finish (up to
        ``grace`` seconds), then close every pooled connection.  Close the
        service first (:meth:`ExtensionService.aclose`) so that its background
        deliveries end before the store does."""
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
        return SqlUnitOfWork(self._db, db_clock=self._db_clock)

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

    async def dump(self) -> StoreDump:
        """Every committed row, in a consistent snapshot."""
        t = self._db.tables
        async with self.unit_of_work() as uow:
            sessions = [_session(r) for r in await uow.rows(_session_select(t))]
            payments = [_payment(r) for r in await uow.rows(select(t.payments).order_by("id"))]
            exts = [_extension(r) for r in await uow.rows(select(t.extensions).order_by("id"))]
            ledger = [_ledger(r) for r in await uow.rows(select(t.ledger).order_by("seq"))]
            log = [_record(r) for r in await uow.rows(select(t.log).order_by("seq"))]
            outbox = [
                (
                    OutboxMessage(
                        r.id, r.kind, r.dedupe_key, r.payload, r.created_at, r.attempts, r.lane
                    ),
                    r.delivered_at is not None,
                )
                for r in await uow.rows(select(t.outbox).order_by("seq"))
            ]
        return StoreDump(sessions, payments, exts, ledger, log, outbox)


class SqlUnitOfWork:
    """One transaction; rolled back on exit unless :meth:`commit` ran."""

    def __init__(self, db: Database, *, db_clock: bool = False) -> None:
        self._db = db
        self._db_clock = db_clock
        self._conn: TxConnection | None = None
        self.statements = statements(db.tables)
        self.sessions = _Sessions(self)
        self.payments = _Payments(self)
        self.extensions = _Extensions(self)
        self.ledger = _Ledger(self)
        self.log = _Log(self)
        self.outbox = _Outbox(self)

    @property
    def tables(self) -> Tables:
        """The tables of this store."""
        return self._db.tables

    @property
    def is_postgres(self) -> bool:
        """Whether row locks (``FOR UPDATE SKIP LOCKED``) exist here."""
        return self._db.is_postgres

    async def __aenter__(self) -> Self:
        if self._conn is not None:
            raise RuntimeError("unit of work already entered")
        self._conn = await self._db.begin()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await self._db.finish(conn, commit=False)

    async def commit(self) -> None:
        """Commit everything at once; a lost race is ``ConcurrencyConflict``."""
        conn, self._conn = self._conn, None
        if conn is None:
            raise RuntimeError("unit of work not active")
        await self._db.finish(conn, commit=True)

    async def execute(self, stmt: Any, params: Any = None) -> Any:
        """Run one statement in this transaction, translating driver errors."""
        if self._conn is None:
            raise RuntimeError("unit of work not active")
        try:
            return await self._conn.execute(stmt, params)
        except DBAPIError as err:
            raise self._db.translate(err) from err

    async def rows(self, stmt: Any, params: Any = None) -> list[Row[Any]]:
        """Every row ``stmt`` returns."""
        return list((await self.execute(stmt, params)).all())

    async def first(self, stmt: Any, params: Any = None) -> Row[Any] | None:
        """The first row ``stmt`` returns, if any."""
        if isinstance(self._conn, InlineConnection):
            try:
                row = first_row(self._raw_sqlite(self._conn), self._db.engine.dialect, stmt, params)
            except DBAPIError as err:
                raise self._db.translate(err) from err
            if row is not NOT_DIRECT:
                return row  # type: ignore[no-any-return]
        return (await self.execute(stmt, params)).first()  # type: ignore[no-any-return]

    @staticmethod
    def _raw_sqlite(conn: InlineConnection) -> sqlite3.Connection:
        raw = conn.sync.connection.driver_connection
        assert isinstance(raw, sqlite3.Connection)
        return raw

    async def upsert(self, table: Any, values: dict[str, Any]) -> None:
        """Insert ``values`` or overwrite the row with the same ``id``."""
        dialect_insert = postgresql.insert if self._db.is_postgres else sqlite.insert
        stmt = dialect_insert(table).values(**values)
        rest = {k: stmt.excluded[k] for k in values if k != "id"}
        await self.execute(stmt.on_conflict_do_update(index_elements=["id"], set_=rest))

    @property
    def write_batch(self) -> DecisionWriter:
        """All of a decision's writes at once: one statement on PostgreSQL
        (:mod:`.batch`), straight through ``sqlite3`` on inline SQLite
        (:mod:`.sqlite_direct`); row by row through the repositories on
        ``+aiosqlite`` (:class:`~extension_fsm.adapters.rowwise.RowWriter`).

        ``await uow.write_batch(extension, session, payment, ledger, log, outbox)``
        with the decision's changes (``Change``-like: ``.row``, ``.expected``;
        ``expected=None`` inserts) and rows; a compare-and-set that matched
        nothing raises ``ConcurrencyConflict``, as the separate updates would.
        """
        if self._db.is_postgres or self._db.is_inline:
            return self._write_batch
        return RowWriter(self)

    @property
    def snapshots(self) -> SnapshotLoader:
        """Each call's reads in one joined ``SELECT`` (see :mod:`.loads`)."""
        return SqlSnapshotLoader(
            self, self.tables, is_postgres=self._db.is_postgres, db_clock=self._db_clock
        )

    async def _write_batch(
        self,
        extension: Any,
        session: Any,
        payment: Any,
        ledger: LedgerEntry | None,
        log: Sequence[TransitionRecord],
        outbox: Sequence[OutboxMessage],
    ) -> None:
        t = self.tables
        parts: list[BatchPart] = []
        for name, table, change, values in (
            ("x", t.extensions, extension, _extension_values),
            ("s", t.sessions, session, _session_values),
            ("p", t.payments, payment, _payment_values),
        ):
            if change is None:
                continue
            row: dict[str, Any] = values(change.row)
            if change.expected is None and name == "x":  # as the service: only extensions insert
                parts.append(BatchPart(name, table, [row]))
            else:
                row_id = row.pop("id")
                parts.append(BatchPart(name, table, [row], (row_id, change.expected or "")))
        if ledger is not None:
            parts.append(BatchPart("l", t.ledger, [_ledger_values(ledger)]))
        parts.append(BatchPart("g", t.log, [_record_values(r) for r in log]))
        parts.append(BatchPart("o", t.outbox, [_outbox_values(m) for m in outbox]))
        if isinstance(self._conn, InlineConnection):
            try:
                write_batch_sqlite(self._raw_sqlite(self._conn), self._db.engine.dialect, parts)
            except DBAPIError as err:
                raise self._db.translate(err) from err
        else:
            await write_batch(self, parts)

    async def compare_and_set(self, table: Any, row_id: str, expected: str, values: Any) -> bool:
        """``UPDATE … WHERE id = row_id AND status = expected``; whether a row matched."""
        stmt = self.statements.cas.get(table.name)
        if stmt is None or stmt.table is not table:
            stmt = update(table).where(
                table.c.id == bindparam("cas_id"), table.c.status == bindparam("cas_expected")
            )
        result = await self.execute(stmt, {**values, "cas_id": row_id, "cas_expected": expected})
        return bool(result.rowcount == 1)


# ---------------------------------------------------------------- repositories


class _Sessions:
    def __init__(self, uow: SqlUnitOfWork) -> None:
        self._uow = uow

    async def get(self, session_id: str) -> Session | None:
        row = await self._uow.first(self._uow.statements.session_by_id, {"key": session_id})
        return _session(row) if row is not None else None

    async def update(self, session: Session, expected_status: str) -> bool:
        values = _session_values(session)
        del values["id"]
        return await self._uow.compare_and_set(
            self._uow.tables.sessions, session.id, expected_status, values
        )


class _Payments:
    def __init__(self, uow: SqlUnitOfWork) -> None:
        self._uow = uow

    async def get(self, payment_id: str) -> PaymentSession | None:
        row = await self._uow.first(self._uow.statements.payment_by_id, {"key": payment_id})
        return _payment(row) if row is not None else None

    async def update(self, payment: PaymentSession, expected_status: str) -> bool:
        values = _payment_values(payment)
        del values["id"]
        return await self._uow.compare_and_set(
            self._uow.tables.payments, payment.id, expected_status, values
        )


class _Extensions:
    def __init__(self, uow: SqlUnitOfWork) -> None:
        self._uow = uow
        self._t = uow.tables.extensions

    async def _one(self, stmt: Select[Any], key: str) -> Extension | None:
        row = await self._uow.first(stmt, {"key": key})
        return _extension(row) if row is not None else None

    async def get(self, extension_id: str) -> Extension | None:
        return await self._one(self._uow.statements.extension_by_id, extension_id)

    async def claim(self, extension_id: str) -> Extension | None:
        s = self._uow.statements
        # On SQLite the unit of work already holds the database's one write lock.
        stmt = s.extension_claim_pg if self._uow.is_postgres else s.extension_by_id
        return await self._one(stmt, extension_id)

    async def add(self, extension: Extension) -> None:
        await self._uow.execute(self._uow.statements.insert_extension, _extension_values(extension))

    async def update(self, extension: Extension, expected_status: str) -> bool:
        values = _extension_values(extension)
        del values["id"]
        return await self._uow.compare_and_set(self._t, extension.id, expected_status, values)

    async def pending_for_session(self, session_id: str) -> Extension | None:
        return await self._one(self._uow.statements.pending_for_session, session_id)

    async def live_for_payment(self, payment_id: str) -> Extension | None:
        return await self._one(self._uow.statements.live_for_payment, payment_id)

    async def due(self, now: datetime, limit: int) -> list[str]:
        t = self._t
        stmt = (
            select(t.c.id)
            .where(
                t.c.status == PENDING,
                t.c.expires_at <= now,
                or_(t.c.set_aside_until.is_(None), t.c.set_aside_until <= now),
            )
            .order_by(t.c.expires_at, t.c.id)
            .limit(limit)
        )
        # A plain read on purpose: under REPEATABLE READ a ``FOR UPDATE`` here
        # fails with a serialization error whenever a row moved since the
        # snapshot, and the service does not retry this read.  ``claim``
        # (``FOR UPDATE SKIP LOCKED``) is what keeps two sweepers apart.
        return [row.id for row in await self._uow.rows(stmt)]

    async def set_aside(self, extension_id: str, now: datetime, reason: str) -> int:
        t = self._t
        row = await self._uow.first(
            select(t.c.set_aside_count).where(t.c.id == extension_id, t.c.status == PENDING)
        )
        if row is None:
            return 0
        times = int(row[0] or 0) + 1
        await self._uow.execute(
            update(t)
            .where(t.c.id == extension_id, t.c.status == PENDING)
            .values(
                set_aside_until=now + set_aside_delay(times),
                set_aside_count=times,
                set_aside_reason=reason[:2000],
            )
        )
        return times


class _Ledger:
    def __init__(self, uow: SqlUnitOfWork) -> None:
        self._uow = uow

    async def add(self, entry: LedgerEntry) -> None:
        await self._uow.execute(self._uow.statements.insert_ledger, _ledger_values(entry))


class _Log:
    def __init__(self, uow: SqlUnitOfWork) -> None:
        self._uow = uow

    async def add(self, records: Sequence[TransitionRecord]) -> None:
        if not records:
            return
        rows = [_record_values(r) for r in records]
        await self._uow.execute(self._uow.statements.insert_log, rows)


class _Outbox:
    def __init__(self, uow: SqlUnitOfWork) -> None:
        self._uow = uow

    async def add(self, messages: Sequence[OutboxMessage]) -> None:
        if not messages:
            return
        rows = [_outbox_values(m) for m in messages]
        await self._uow.execute(self._uow.statements.insert_outbox, rows)
