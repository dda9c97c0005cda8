"""A unit of work's writes, written once as SQLAlchemy Core (its reads are the
joined ones of :mod:`.loads`).

:class:`Statements`, held by the store, builds each write once per shape
(which table, which columns, how many rows) with bound parameters, the
values bound per call.  Each write is a plain function of a
:class:`~sqlalchemy.engine.Connection`, run by the unit of work's
transaction (:mod:`.engine`) on either backend.

- The compare-and-set, :func:`compare_and_set`, is the only ``UPDATE`` of a
  status: ``UPDATE … SET <changed columns> WHERE id = … AND status = …``.  It
  writes only the columns a decision changed (:func:`changed_values`), so a
  host's other columns, and values a host wrote in its own types, are left
  as they are.
- :func:`write_decision` writes a decision: on PostgreSQL every part as one
  guarded statement of data-modifying CTEs, atomic on its own (one round
  trip, no transaction: :meth:`Statements.decision`); on SQLite one statement
  per part inside the unit of work's transaction, which holds the write lock
  since its first read.  A guard that failed is a
  :class:`~extension_fsm.errors.ConcurrencyConflict` either way, and nothing
  of the decision is written.

Status filters are SQL literals, the very text of the partial indexes'
predicates (:mod:`.schema`): a planner can prove a partial index usable only
from constants (SQLite never does for ``IN (?, ?)``; a PostgreSQL generic plan
never does for ``$n``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    Table,
    Update,
    bindparam,
    exists,
    func,
    insert,
    literal_column,
    select,
    true,
    update,
)
from sqlalchemy.sql.elements import ColumnClause

from ...errors import ConcurrencyConflict, StorageError
from ...model import ExtensionStatus, set_aside_delay
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
    #: a compare-and-set's other guarded columns: each column it changes, with
    #: the value the decision read (PostgreSQL's guard, see :meth:`Statements.decision`)
    before: Mapping[str, Any] = field(default_factory=dict)

    def shape(self) -> tuple[Any, ...]:
        """What the statement for this write depends on (not the values)."""
        return (
            self.table.name,
            self.cas is not None,
            len(self.rows),
            tuple(self.rows[0]),
            tuple(self.before),
        )

    def params(self, prefix: str = "", *, guard: bool = False) -> dict[str, Any]:
        """The values of a compare-and-set, named as :func:`compare_and_set` binds
        them; with ``guard`` its guard's too (``:<prefix>b_<column>``)."""
        assert self.cas is not None
        params = {f"{prefix}v_{c}": v for c, v in self.rows[0].items()}
        if guard:
            params.update({f"{prefix}b_{c}": v for c, v in self.before.items()})
        params[f"{prefix}cas_id"], params[f"{prefix}cas_expected"] = self.cas
        return params


def write_decision(
    conn: Connection, statements: Statements, writes: Sequence[Write], *, is_postgres: bool
) -> None:
    """Run ``writes`` in the transaction of ``conn`` (see the module docstring)."""
    writes = [w for w in writes if w.rows]
    if not writes:
        return
    if is_postgres:
        stmt = statements.decision(writes)
        params: dict[str, Any] = {}
        for i, w in enumerate(writes):
            if w.cas is not None:
                params.update(w.params(f"w{i}_", guard=True))
            else:
                for r, row in enumerate(w.rows):
                    params.update({f"w{i}_{r}_v_{c}": v for c, v in row.items()})
        held, *counts = conn.execute(stmt, params).one()
        if held == 0:  # a guard failed: the statement wrote nothing
            moved = next(w for w in writes if w.cas is not None)
            assert moved.cas is not None
            raise ConcurrencyConflict(f"{moved.table.name} {moved.cas[0]} moved")
        for w, written in zip(writes, counts, strict=True):
            expected = 1 if w.cas is not None else len(w.rows)
            if written != expected:  # the guard held every row: cannot happen
                raise StorageError(f"decision wrote {written} of {expected} {w.table.name} rows")
        return
    for w in writes:
        if w.cas is not None:
            stmt = statements.compare_and_set(w.table, tuple(w.rows[0]))
            if conn.execute(stmt, w.params()).rowcount != 1:
                # The transaction holds SQLite's one write lock since its
                # first read; the unit of work rolls back what came before.
                raise ConcurrencyConflict(f"{w.table.name} {w.cas[0]} moved")
        else:
            conn.execute(statements.insert(w.table), list(w.rows))


class Statements:
    """The writes of one schema (a decision's, by shape, and the set-aside),
    built once (building a statement costs about as much as running a short
    one)."""

    def __init__(self, t: Tables) -> None:
        self.tables = t
        # Writes by shape (which table, which columns, how many rows): few per
        # schema, each built once; SQLAlchemy then finds it compiled by its key.
        self._writes: dict[tuple[Any, ...], Any] = {}
        x = t.extensions
        # the set-aside's read: how often the pending extension was set aside
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
        """PostgreSQL: every write of a decision as one statement, built once
        per shape, atomic on its own (no transaction around it).

        Its first CTE, ``g``, locks every row a compare-and-set writes (``FOR
        UPDATE``), where each still holds the status and the values the
        decision read; every write is conditional on ``g`` having found them
        (``EXISTS``), so either all of it is written or, a guard having failed,
        nothing is.  A row another statement is writing is waited for, then
        checked again as it committed (READ COMMITTED's re-check).  It returns
        how many rows ``g`` held, then how many each write wrote."""

        def build() -> Any:
            held: Any = None
            guarded = [(i, w) for i, w in enumerate(writes) if w.cas is not None]
            if guarded:
                where: list[Any] = []
                for i, w in guarded:
                    t = w.table
                    where.append(t.c.id == bindparam(f"w{i}_cas_id", type_=t.c.id.type))
                    where.append(
                        t.c.status == bindparam(f"w{i}_cas_expected", type_=t.c.status.type)
                    )
                    where.extend(
                        t.c[c].is_not_distinct_from(bindparam(f"w{i}_b_{c}", type_=t.c[c].type))
                        for c in w.before
                    )
                tables = [w.table for _, w in guarded]
                rows: Any = tables[0]
                for other in tables[1:]:  # each row found by its id: ON TRUE
                    rows = rows.join(other, true())
                held = (
                    select(literal_column("1").label("one"))
                    .select_from(rows)
                    .where(*where)
                    .with_for_update(of=tables)
                    .cte("g")
                )
            only_if = [] if held is None else [exists(select(held.c.one))]
            counted: list[Any] = [
                literal_column("1")
                if held is None
                else select(func.count()).select_from(held).scalar_subquery()
            ]
            for i, w in enumerate(writes):
                t = w.table
                if w.cas is not None:
                    parts: list[Any] = [
                        update(t)
                        .where(t.c.id == bindparam(f"w{i}_cas_id", type_=t.c.id.type), *only_if)
                        .values({c: bindparam(f"w{i}_v_{c}", type_=t.c[c].type) for c in w.rows[0]})
                    ]
                else:  # one row a statement: a multi-row VALUES has no cache key
                    parts = []
                    for r, row in enumerate(w.rows):
                        values = select(
                            *(bindparam(f"w{i}_{r}_v_{c}", type_=t.c[c].type) for c in row)
                        ).where(*only_if)
                        parts.append(insert(t).from_select(list(row), values))
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
