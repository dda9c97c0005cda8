"""The unit of work: a call's reads and its decision's write (:mod:`.engine`).

Reads go through :attr:`SqlUnitOfWork.snapshots` (each call's rows in one
joined ``SELECT``, :mod:`.loads`); the decision's writes through
:attr:`SqlUnitOfWork.write_batch`, all at once (:mod:`.statements`), run by
the commit; the sweep's set-aside through :meth:`SqlUnitOfWork.set_aside`.
These are the only ways this adapter reads and writes the flow's rows.
Every row read is remembered, so that a status change writes only the
columns the decision changed, guarded by the status and by the values read.

On PostgreSQL a decision call is two round trips and no transaction: the
joined read and the guarded write are each atomic on their own (autocommit),
and a write whose guard failed wrote nothing and raises
``ConcurrencyConflict``, so the service reads again.  A set-aside (or a
statement run with :meth:`SqlUnitOfWork.execute`) opens a ``REPEATABLE
READ`` transaction that the unit of work commits or rolls back.  On SQLite
everything runs in one ``BEGIN IMMEDIATE`` transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Self, TypeVar

from sqlalchemy import Connection, Result, Row, Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import FrozenResult

from ...core import Change
from ...model import Extension, LedgerEntry, PaymentSession, Session, TransitionRecord
from ...ports import DecisionWriter, OutboxMessage, SnapshotLoader
from .engine import Database, Transaction
from .loads import SnapshotStatements, SqlSnapshotLoader
from .rows import (
    _extension_values,
    _ledger_values,
    _outbox_values,
    _payment_values,
    _record_values,
    _session_values,
)
from .schema import Tables
from .statements import Statements, Write, changed_values, write_decision

__all__ = ["SqlUnitOfWork"]

T = TypeVar("T")
_Row = Session | PaymentSession | Extension
#: columns no guard compares: the status has its own; a sweep's lease and a
#: set-aside are bookkeeping that a decision clears whatever they hold
_UNGUARDED = frozenset({"status", "set_aside_until", "set_aside_count", "set_aside_reason"})


class SqlUnitOfWork:
    """One transaction; rolled back on exit unless :meth:`commit` ran."""

    def __init__(self, db: Database, statements: Statements, snapshots: SnapshotStatements) -> None:
        self._db = db
        self.statements = statements
        self._snapshot_statements = snapshots
        self._tx: Transaction | None = None
        self._seen: dict[str, Any] = {}
        # the decisions' writes, run by the commit (see commit())
        self._deferred: list[Callable[[Connection], Any]] = []

    @property
    def tables(self) -> Tables:
        """The tables of this store."""
        return self._db.tables

    @property
    def is_postgres(self) -> bool:
        """Whether row locks (``FOR UPDATE``) exist here."""
        return self._db.is_postgres

    async def __aenter__(self) -> Self:
        if self._tx is not None:
            raise RuntimeError("unit of work already entered")
        self._tx = await self._db.begin()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        tx, self._tx = self._tx, None
        if tx is not None:
            await tx.finish(commit=False)

    async def commit(self) -> None:
        """Commit everything at once; a lost race is ``ConcurrencyConflict``.

        The decisions' writes (:attr:`write_batch`) run here: on SQLite in the
        same hop to the worker thread as the ``COMMIT``; on PostgreSQL one
        decision's write on its own (one statement in autocommit, one round
        trip), several (a sweep's batch) in one transaction, so a batch is
        flushed to disk once."""
        tx, self._tx = self._tx, None
        if tx is None:
            raise RuntimeError("unit of work not active")
        deferred, self._deferred = self._deferred, []

        def last(conn: Connection) -> None:
            for fn in deferred:
                fn(conn)

        await tx.finish(commit=True, last=last if deferred else None, alone=len(deferred) == 1)

    async def run(
        self, fn: Callable[[Connection], T], *, alone: bool = False, read_only: bool = False
    ) -> T:
        """``fn(connection)`` in this unit of work (driver errors translated);
        ``alone`` and ``read_only`` as :meth:`~.engine.Transaction.run` takes them."""
        if self._tx is None:
            raise RuntimeError("unit of work not active")
        return await self._tx.run(fn, alone=alone, read_only=read_only)

    async def execute(self, stmt: Any, params: Any = None) -> Result[Any]:
        """Run one statement; its result, rows read already (``.rowcount`` of
        a write, ``.scalar()``, ``.all()`` … of a read)."""

        def run(conn: Connection) -> Result[Any] | FrozenResult[Any]:
            result = conn.execute(stmt, params)
            return result.freeze() if result.returns_rows else result

        done = await self.run(run)
        return done() if isinstance(done, FrozenResult) else done

    async def rows(self, stmt: Any, params: Any = None) -> list[Row[Any]]:
        """Every row ``stmt`` returns (one statement, atomic on its own)."""
        return await self.run(
            lambda conn: list(conn.execute(stmt, params).all()), alone=True, read_only=True
        )

    async def claim(self, stmt: Any, params: Any = None) -> list[Row[Any]]:
        """Every row ``stmt`` (one statement that writes a lease) returns."""
        return await self.run(lambda conn: list(conn.execute(stmt, params).all()), alone=True)

    async def first(self, stmt: Any, params: Any = None) -> Row[Any] | None:
        """The first row ``stmt`` (a read) returns, if any."""
        return await self.run(
            lambda conn: conn.execute(stmt, params).first(), alone=True, read_only=True
        )

    async def upsert(self, table: Table, values: dict[str, Any]) -> None:
        """Insert ``values`` or overwrite the row with the same ``id``."""
        dialect_insert = postgresql.insert if self._db.is_postgres else sqlite.insert
        stmt = dialect_insert(table).values(**values)
        rest = {k: stmt.excluded[k] for k in values if k != "id"}
        await self.execute(stmt.on_conflict_do_update(index_elements=["id"], set_=rest))

    # ------------------------------------------------------------------ writes

    def remember(self, row: T) -> T:
        """Keep ``row`` as read: a later write of it changes only what differs."""
        self._seen[f"{_kind(row)}:{row.id}"] = row  # type: ignore[attr-defined]
        return row

    def _write(self, row: _Row, expected: str | None) -> Write:
        """The compare-and-set (or, for a new extension, the insert) of ``row``."""
        kind = _kind(row)
        table, values = {
            "s": (self.tables.sessions, _session_values),
            "p": (self.tables.payments, _payment_values),
            "x": (self.tables.extensions, _extension_values),
        }[kind]
        after: dict[str, Any] = values(row)  # type: ignore[operator]
        if expected is None:
            return Write(table, [after])
        seen = self._seen.get(f"{kind}:{row.id}")
        before: dict[str, Any] | None = None if seen is None else values(seen)  # type: ignore[operator]
        changed = changed_values(before, after)
        # The guard: the status, and each column written as it was read.
        guard = {} if before is None else {c: before[c] for c in changed if c not in _UNGUARDED}
        if kind == "x":  # a decided extension is no longer set aside
            changed["set_aside_until"] = None
        if not changed:  # nothing moved: the guard alone (status set to itself)
            changed["status"] = expected
        return Write(table, [changed], (row.id, expected), guard)

    @property
    def write_batch(self) -> DecisionWriter:
        """All of a decision's writes at once (see :func:`~.statements.write_decision`).

        ``await uow.write_batch(extension, session, payment, ledger, log, outbox)``
        with the decision's changes (``.row``, ``.expected``; ``expected=None``
        inserts) and rows; a compare-and-set that matched nothing raises
        ``ConcurrencyConflict``.
        """
        return self._write_batch

    async def _write_batch(
        self,
        extension: Change[Extension] | None,
        session: Change[Session] | None,
        payment: Change[PaymentSession] | None,
        ledger: LedgerEntry | None,
        log: Sequence[TransitionRecord],
        outbox: Sequence[OutboxMessage],
    ) -> None:
        t = self.tables
        writes: list[Write] = []
        for change in (extension, session, payment):
            if change is None:
                continue
            expected = change.expected
            if expected is None and not isinstance(change.row, Extension):
                expected = ""  # only extensions are inserted: this guard matches nothing
            writes.append(self._write(change.row, expected))
        if ledger is not None:
            writes.append(Write(t.ledger, [_ledger_values(ledger)]))
        writes.append(Write(t.log, [_record_values(r) for r in log]))
        writes.append(Write(t.outbox, [_outbox_values(m) for m in outbox]))
        s, is_postgres = self.statements, self._db.is_postgres

        def write(conn: Connection) -> None:
            write_decision(conn, s, writes, is_postgres=is_postgres)

        if self._tx is None:
            raise RuntimeError("unit of work not active")
        self._deferred.append(write)  # written by the commit
        for change in (extension, session, payment):
            if change is not None:
                self.remember(change.row)  # what is stored now

    async def set_aside(self, extension_id: str, now: datetime, reason: str) -> int:
        """Set a pending extension the sweep could not decide aside (see the port)."""
        return await self.run(self.statements.set_aside(extension_id, now, reason))

    @property
    def snapshots(self) -> SnapshotLoader:
        """Each call's reads in one joined ``SELECT`` (see :mod:`.loads`)."""
        return SqlSnapshotLoader(self, self._snapshot_statements, self._seen)


def _kind(row: object) -> str:
    if isinstance(row, Session):
        return "s"
    if isinstance(row, PaymentSession):
        return "p"
    if isinstance(row, Extension):
        return "x"
    raise TypeError(f"not a row this store writes: {type(row).__name__}")
