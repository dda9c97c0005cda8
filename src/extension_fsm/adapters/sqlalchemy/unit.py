"""The unit of work: one database transaction, and how its statements run.

Three ways, chosen by the store: SQLAlchemy's async connection (PostgreSQL
with ``direct=0``, ``+psycopg``, SQLite through ``+aiosqlite``); inline SQLite,
whose hot statements go straight to ``sqlite3`` (:mod:`.sqlite_direct`); and
PostgreSQL on asyncpg directly (:mod:`.pg_direct`), where every statement of
the unit of work runs on the pooled driver connection.  Reads go through
:meth:`SqlUnitOfWork.first` and :meth:`SqlUnitOfWork.rows`, writes through
:meth:`SqlUnitOfWork.execute`, :meth:`SqlUnitOfWork.compare_and_set` and the
decision's one write (:attr:`SqlUnitOfWork.write_batch`, :mod:`.batch`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Self

from sqlalchemy import Row, bindparam, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError

from ...errors import StorageError
from ...model import LedgerEntry, TransitionRecord
from ...ports import DecisionWriter, OutboxMessage, SnapshotLoader
from ..rowwise import RowWriter
from .batch import BatchPart, write_batch
from .engine import Database, InlineConnection, TxConnection
from .loads import SqlSnapshotLoader
from .pg_direct import DirectConnection, PgDirect
from .repositories import Extensions, Ledger, Log, Outbox, Payments, Sessions
from .rows import (
    _extension_values,
    _ledger_values,
    _outbox_values,
    _payment_values,
    _record_values,
    _session_values,
)
from .schema import Tables
from .sqlite_direct import NOT_DIRECT, first_row, write_batch_sqlite
from .statements import statements

__all__ = ["SqlUnitOfWork"]


class SqlUnitOfWork:
    """One transaction; rolled back on exit unless :meth:`commit` ran.

    With ``direct`` (PostgreSQL on asyncpg) the transaction and every
    statement run on a connection of that pool (:mod:`.pg_direct`)."""

    def __init__(
        self, db: Database, *, db_clock: bool = False, direct: PgDirect | None = None
    ) -> None:
        self._db = db
        self._db_clock = db_clock
        self._direct = direct
        self._conn: TxConnection | DirectConnection | None = None
        # A statement failed on SQLAlchemy's PostgreSQL connection: the server
        # aborted the transaction, so a COMMIT would only roll it back.
        self._aborted = False
        self.statements = statements(db.tables)
        self.sessions = Sessions(self)
        self.payments = Payments(self)
        self.extensions = Extensions(self)
        self.ledger = Ledger(self)
        self.log = Log(self)
        self.outbox = Outbox(self)

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
        self._conn = await (self._direct.begin() if self._direct else self._db.begin())
        return self

    async def _finish(self, conn: TxConnection | DirectConnection, *, commit: bool) -> None:
        if isinstance(conn, DirectConnection):
            assert self._direct is not None
            await self._direct.finish(conn, commit=commit)
        else:
            await self._db.finish(conn, commit=commit)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await self._finish(conn, commit=False)

    async def commit(self) -> None:
        """Commit everything at once; a lost race is ``ConcurrencyConflict``."""
        conn, self._conn = self._conn, None
        if conn is None:
            raise RuntimeError("unit of work not active")
        if self._aborted:
            await self._finish(conn, commit=False)
            raise StorageError("the transaction had failed: nothing was committed")
        await self._finish(conn, commit=True)

    async def execute(self, stmt: Any, params: Any = None) -> Any:
        """Run one statement in this transaction, translating driver errors."""
        if self._conn is None:
            raise RuntimeError("unit of work not active")
        try:
            return await self._conn.execute(stmt, params)
        except DBAPIError as err:
            self._aborted = self._db.is_postgres
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
        (:mod:`.batch`; on asyncpg directly with the direct path), straight
        through ``sqlite3`` on inline SQLite (:mod:`.sqlite_direct`); row by
        row through the repositories on ``+aiosqlite``
        (:class:`~extension_fsm.adapters.rowwise.RowWriter`).

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
