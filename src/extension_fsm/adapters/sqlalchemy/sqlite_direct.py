"""SQLite (inline driver): the hot statements straight through ``sqlite3``.

On SQLite what costs is not a round trip (there is none) but SQLAlchemy's
per-statement work, several times the statement's own (bench/).  So the
hot statements are compiled by SQLAlchemy once, to SQL text plus the column
types' own bind and result processors, and then run on the transaction's
``sqlite3`` connection:

- :func:`write_batch_sqlite`: a decision's writes (SQLite has no
  data-modifying CTEs for the PostgreSQL one-statement batch of
  :mod:`.batch`), one ``execute`` per compare-and-set and one
  ``executemany`` per inserted table; a compare-and-set that matched nothing
  is :class:`~extension_fsm.errors.ConcurrencyConflict`;
- :func:`first_row`: the first row of one of the store's prebuilt
  ``SELECT`` statements, as a named tuple of processed values.

A driver error is wrapped as SQLAlchemy would wrap it, for the store's
translation, so both paths fail exactly as the SQLAlchemy ones do.
"""

from __future__ import annotations

import sqlite3
from collections import namedtuple
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Table, bindparam, insert, update
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError

from ...errors import ConcurrencyConflict
from .batch import BatchPart

__all__ = ["NOT_DIRECT", "first_row", "write_batch_sqlite"]

_Processor = Callable[[Any], Any] | None


@dataclass(frozen=True, slots=True)
class _Plan:
    sql: str
    keys: tuple[str, ...]
    processors: tuple[_Processor, ...]

    def params(self, row: Mapping[str, Any], memo: dict[Any, Any]) -> tuple[Any, ...]:
        out = []
        for k, p in zip(self.keys, self.processors, strict=True):
            v = row[k]
            if p is None or v is None:
                out.append(v)
            elif type(v) is datetime:  # one decision repeats the same instant in most rows
                key = (p, v)
                if key not in memo:
                    memo[key] = p(v)
                out.append(memo[key])
            else:
                out.append(p(v))
        return tuple(out)


_PLANS: dict[tuple[Table, bool, tuple[str, ...], Dialect], _Plan] = {}


def _plan(table: Table, cas: bool, keys: tuple[str, ...], dialect: Dialect) -> _Plan:
    cache_key = (table, cas, keys, dialect)
    plan = _PLANS.get(cache_key)
    if plan is not None:
        return plan
    values = {k: bindparam(f"v_{k}", type_=table.c[k].type) for k in keys}
    if cas:
        stmt: Any = (
            update(table)
            .where(table.c.id == bindparam("v_id"), table.c.status == bindparam("v_cas"))
            .values(values)
        )
    else:
        stmt = insert(table).values(values)
    compiled = stmt.compile(dialect=dialect)
    order = tuple(name.removeprefix("v_") for name in compiled.positiontup or ())
    types = {k: table.c[k].type for k in keys}
    if cas:
        types |= {"id": table.c.id.type, "cas": table.c.status.type}
    plan = _Plan(
        compiled.string,
        order,
        tuple(types[k].dialect_impl(dialect).bind_processor(dialect) for k in order),
    )
    if len(_PLANS) > 512:  # shapes are few per schema; many short-lived stores are not
        _PLANS.clear()
    _PLANS[cache_key] = plan
    return plan


def write_batch_sqlite(
    conn: sqlite3.Connection, dialect: Dialect, parts: Sequence[BatchPart]
) -> None:
    """Run ``parts`` on ``conn`` (inside the unit of work's transaction)."""
    memo: dict[Any, Any] = {}
    for p in parts:
        if not p.rows:
            continue
        keys = tuple(p.rows[0])
        try:
            if p.cas is not None:
                plan = _plan(p.table, True, keys, dialect)
                row_id, expected = p.cas
                matched = conn.execute(
                    plan.sql, plan.params({**p.rows[0], "id": row_id, "cas": expected}, memo)
                ).rowcount
                if matched != 1:
                    raise ConcurrencyConflict(f"{p.table.name} {row_id} moved")
            else:
                plan = _plan(p.table, False, keys, dialect)
                conn.executemany(plan.sql, [plan.params(row, memo) for row in p.rows])
        except sqlite3.Error as err:
            raise DBAPIError.instance(
                "write_batch", None, err, sqlite3.Error, dialect=dialect
            ) from err


@dataclass(frozen=True, slots=True)
class _Select:
    stmt: Any  # kept alive, so its id() is never reused while cached
    sql: str
    names: tuple[str, ...]
    defaults: tuple[Any, ...]
    processors: tuple[_Processor, ...]
    row: Callable[..., Any]
    results: tuple[_Processor, ...]


_SELECTS: dict[tuple[int, Dialect], _Select | None] = {}


def _select_plan(stmt: Any, dialect: Dialect) -> _Select | None:
    key = (id(stmt), dialect)
    if key in _SELECTS:
        plan = _SELECTS[key]
        if plan is None or plan.stmt is stmt:
            return plan
    compiled = stmt.compile(dialect=dialect)
    names = tuple(compiled.positiontup or ())
    binds = [compiled.binds[n] for n in names]
    plan = None
    if not any(b.expanding for b in binds):  # ``IN`` lists: left to SQLAlchemy
        columns = list(stmt.selected_columns)
        plan = _Select(
            stmt,
            compiled.string,
            names,
            tuple(b.value for b in binds),
            tuple(b.type.dialect_impl(dialect).bind_processor(dialect) for b in binds),
            namedtuple("Row", [c.key for c in columns])._make,  # type: ignore[attr-defined]
            tuple(c.type.dialect_impl(dialect).result_processor(dialect, None) for c in columns),
        )
    if len(_SELECTS) > 512:
        _SELECTS.clear()
    _SELECTS[key] = plan
    return plan


NOT_DIRECT = object()
"""What :func:`first_row` returns for a statement it leaves to SQLAlchemy."""


def first_row(
    conn: sqlite3.Connection, dialect: Dialect, stmt: Any, params: Mapping[str, Any] | None
) -> Any:
    """The first row ``stmt`` returns with ``params`` (or ``None``); :data:`NOT_DIRECT`
    when ``stmt`` is not one this module runs (the caller uses SQLAlchemy)."""
    plan = _select_plan(stmt, dialect)
    if plan is None:
        return NOT_DIRECT
    given = params or {}
    args = []
    for name, default, proc in zip(plan.names, plan.defaults, plan.processors, strict=True):
        value = given.get(name, default)
        args.append(value if proc is None or value is None else proc(value))
    try:
        raw = conn.execute(plan.sql, args).fetchone()
    except sqlite3.Error as err:
        raise DBAPIError.instance(plan.sql, args, err, sqlite3.Error, dialect=dialect) from err
    if raw is None:
        return None
    return plan.row(
        v if p is None or v is None else p(v) for v, p in zip(raw, plan.results, strict=True)
    )
