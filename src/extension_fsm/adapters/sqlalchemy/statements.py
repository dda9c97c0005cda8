"""Every statement of a unit of work, written once as SQLAlchemy Core, by table.

Reads are built once per store (:class:`Statements`, held by the store) with
bound parameters; writes are built per call from the values they write.  Each
is a plain function of a :class:`~sqlalchemy.engine.Connection`, run by the
unit of work's transaction (:mod:`.engine`) on either backend.

- The compare-and-set, :func:`compare_and_set`, is the only ``UPDATE`` of a
  status: ``UPDATE … SET <changed columns> WHERE id = … AND status = …``.  It
  writes only the columns a decision changed (:func:`changed_values`), so a
  host's other columns, and values a host wrote in its own types, are left
  as they are.
- :func:`write_decision` writes a decision: on PostgreSQL every part as one
  statement of data-modifying CTEs (one round trip; each CTE returns a row
  per row written, so a compare-and-set that matched nothing is seen); on
  SQLite one statement per part, in the one hop of the write.  A
  compare-and-set that matched nothing is a
  :class:`~extension_fsm.errors.ConcurrencyConflict` either way.

Status filters are SQL literals, the very text of the partial indexes'
predicates (:mod:`.schema`): a planner can prove a partial index usable only
from constants (SQLite never does for ``IN (?, ?)``; a PostgreSQL generic plan
never does for ``$n``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    Row,
    Table,
    Update,
    bindparam,
    func,
    insert,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy.sql.elements import ColumnClause

from ...errors import ConcurrencyConflict
from ...model import ExtensionStatus, set_aside_delay
from .rows import _session_select
from .schema import Tables

__all__ = [
    "LIVE",
    "PENDING",
    "Statements",
    "Write",
    "changed_values",
    "compare_and_set",
    "write_decision",
]

PENDING: ColumnClause[str] = literal_column(f"'{ExtensionStatus.PENDING.value}'")
LIVE: list[ColumnClause[str]] = [PENDING, literal_column(f"'{ExtensionStatus.ACCEPTED.value}'")]


def compare_and_set(table: Table, columns: Sequence[str], prefix: str = "") -> Update:
    """``UPDATE table SET <columns> WHERE id = :<prefix>cas_id AND status = :<prefix>cas_expected``,
    each column's value bound as ``:<prefix>v_<column>`` (see :meth:`Write.params`)."""
    return (
        update(table)
        .where(
            table.c.id == bindparam(f"{prefix}cas_id", type_=table.c.id.type),
            table.c.status == bindparam(f"{prefix}cas_expected", type_=table.c.status.type),
        )
        .values({c: bindparam(f"{prefix}v_{c}", type_=table.c[c].type) for c in columns})
    )


def _insert_row(table: Table, columns: Sequence[str], prefix: str) -> Any:
    """A single-row ``INSERT`` of ``columns`` bound as ``:<prefix>v_<column>``."""
    return insert(table).values(
        {c: bindparam(f"{prefix}v_{c}", type_=table.c[c].type) for c in columns}
    )


def changed_values(before: Mapping[str, Any] | None, after: Mapping[str, Any]) -> dict[str, Any]:
    """The columns of ``after`` whose values differ from ``before`` (every
    column but ``id`` when ``before`` is unknown)."""
    if before is None:
        return {k: v for k, v in after.items() if k != "id"}
    return {k: v for k, v in after.items() if k != "id" and before.get(k) != v}


@dataclass(frozen=True, slots=True)
class Write:
    """One table's share of a decision: ``cas`` = ``(row id, expected status)``
    makes it a compare-and-set of ``rows[0]``; ``None`` an ``INSERT`` of every row."""

    table: Table
    rows: Sequence[Mapping[str, Any]]
    cas: tuple[str, str] | None = None

    def shape(self) -> tuple[Any, ...]:
        """What the statement for this write depends on (not the values)."""
        return (self.table.name, self.cas is not None, len(self.rows), tuple(self.rows[0]))

    def params(self, prefix: str = "") -> dict[str, Any]:
        """The values of a compare-and-set, named as :func:`compare_and_set` binds them."""
        assert self.cas is not None
        params = {f"{prefix}v_{c}": v for c, v in self.rows[0].items()}
        params[f"{prefix}cas_id"], params[f"{prefix}cas_expected"] = self.cas
        return params


def write_decision(
    conn: Connection, statements: Statements, writes: Sequence[Write], *, is_postgres: bool
) -> None:
    """Run ``writes`` in the transaction of ``conn`` (see the module docstring)."""
    writes = [w for w in writes if w.rows]
    if not writes:
        return
    guarded: list[tuple[Write, int]] = []  # each compare-and-set and the rows it matched
    if is_postgres:
        stmt = statements.decision(writes)
        params: dict[str, Any] = {}
        for i, w in enumerate(writes):
            if w.cas is not None:
                params.update(w.params(f"w{i}_"))
            else:
                for r, row in enumerate(w.rows):
                    params.update({f"w{i}_{r}_v_{c}": v for c, v in row.items()})
        counts = conn.execute(stmt, params).one()
        guarded = [(w, n) for w, n in zip(writes, counts, strict=True) if w.cas is not None]
    else:
        for w in writes:
            if w.cas is not None:
                stmt = statements.compare_and_set(w.table, tuple(w.rows[0]))
                guarded.append((w, conn.execute(stmt, w.params()).rowcount))
            else:
                conn.execute(statements.insert(w.table), list(w.rows))
    for w, matched in guarded:
        if matched != 1:
            assert w.cas is not None
            raise ConcurrencyConflict(f"{w.table.name} {w.cas[0]} moved")


class Statements:
    """The reads of one schema, built once with bound parameters (building a
    statement costs about as much as running a short one)."""

    def __init__(self, t: Tables, *, is_postgres: bool) -> None:
        self.tables = t
        self.is_postgres = is_postgres
        # Writes by shape (which table, which columns, how many rows): few per
        # schema, each built once; SQLAlchemy then finds it compiled by its key.
        self._writes: dict[tuple[Any, ...], Any] = {}
        x = t.extensions
        # sessions
        self.session_by_id = _session_select(t).where(t.sessions.c.id == bindparam("key"))
        # payments
        self.payment_by_id = select(t.payments).where(t.payments.c.id == bindparam("key"))
        # extensions
        self.extension_by_id = select(x).where(x.c.id == bindparam("key"))
        claim = self.extension_by_id
        if is_postgres:  # on SQLite the unit of work already holds the one write lock
            claim = claim.with_for_update(skip_locked=True)
        self.extension_claim = claim
        self.pending_for_session = select(x).where(
            x.c.session_id == bindparam("key"), x.c.status == PENDING
        )
        self.live_for_payment = select(x).where(
            x.c.payment_session_id == bindparam("key"), x.c.status.in_(LIVE)
        )
        now = bindparam("now", type_=x.c.expires_at.type)
        # A plain read on purpose: under REPEATABLE READ a ``FOR UPDATE`` here
        # fails whenever a row moved since the snapshot; ``claim`` (``FOR UPDATE
        # SKIP LOCKED``) is what keeps two sweepers apart.
        self.due_ids = (
            select(x.c.id)
            .where(
                x.c.status == PENDING,
                x.c.expires_at <= now,
                or_(x.c.set_aside_until.is_(None), x.c.set_aside_until <= now),
            )
            .order_by(x.c.expires_at, x.c.id)
            .limit(bindparam("limit"))
        )
        self.set_aside_count = select(x.c.set_aside_count).where(
            x.c.id == bindparam("key"), x.c.status == PENDING
        )

    def _built(self, shape: tuple[Any, ...], build: Any) -> Any:
        stmt = self._writes.get(shape)
        if stmt is None:
            if len(self._writes) > 256:  # shapes are few; never let them grow unbounded
                self._writes.clear()
            stmt = self._writes[shape] = build()
        return stmt

    def compare_and_set(self, table: Table, columns: tuple[str, ...]) -> Update:
        """:func:`compare_and_set` of ``columns`` of ``table``, built once."""
        return self._built(  # type: ignore[no-any-return]
            ("cas", table.name, columns), lambda: compare_and_set(table, columns)
        )

    def insert(self, table: Table) -> Any:
        """``INSERT INTO table`` (its columns from each row's keys), built once."""
        return self._built(("insert", table.name), lambda: insert(table))

    def decision(self, writes: Sequence[Write]) -> Any:
        """PostgreSQL: every write as one statement of data-modifying CTEs, built
        once per shape; it returns, per write, how many rows it wrote."""

        def build() -> Any:
            counted = []
            for i, w in enumerate(writes):
                if w.cas is not None:
                    parts = [compare_and_set(w.table, tuple(w.rows[0]), f"w{i}_")]
                else:  # one row a statement: a multi-row VALUES has no cache key
                    parts = [
                        _insert_row(w.table, tuple(row), f"w{i}_{r}_")
                        for r, row in enumerate(w.rows)
                    ]
                ctes = [
                    p.returning(literal_column("1").label("one")).cte(f"w{i}_{n}")
                    for n, p in enumerate(parts)
                ]
                counted.append(
                    sum(
                        (select(func.count()).select_from(c).scalar_subquery() for c in ctes[1:]),
                        select(func.count()).select_from(ctes[0]).scalar_subquery(),
                    )
                )
            return select(*counted)

        return self._built(("decision", *(w.shape() for w in writes)), build)

    def first(self, stmt: Any, key: str) -> Any:
        """A function of a connection: the first row of ``stmt`` for ``key``."""

        def read(conn: Connection) -> Row[Any] | None:
            return conn.execute(stmt, {"key": key}).first()

        return read

    def due(self, now: datetime, limit: int) -> Any:
        def read(conn: Connection) -> list[str]:
            return [r.id for r in conn.execute(self.due_ids, {"now": now, "limit": limit})]

        return read

    def set_aside(self, extension_id: str, now: datetime, reason: str) -> Any:
        """Put a pending extension aside (see the port); how often it has been."""
        x = self.tables.extensions

        def write(conn: Connection) -> int:
            row = conn.execute(self.set_aside_count, {"key": extension_id}).first()
            if row is None:
                return 0
            times = int(row[0] or 0) + 1
            conn.execute(
                update(x)
                .where(x.c.id == extension_id, x.c.status == PENDING)
                .values(
                    set_aside_until=now + set_aside_delay(times),
                    set_aside_count=times,
                    set_aside_reason=reason[:2000],
                )
            )
            return times

        return write
