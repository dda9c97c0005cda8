"""SQLite (inline driver): a decision's writes straight through ``sqlite3``.

SQLite has no data-modifying CTEs, so the PostgreSQL one-statement batch
(:mod:`.batch`) does not apply; what costs here is not the round trip (there
is none) but SQLAlchemy's per-statement work, several times the statement's
own (bench/).  Each write shape is compiled by SQLAlchemy once, to SQL text
and the column types' own bind processors; a decision then runs as one
``execute`` per compare-and-set and one ``executemany`` per inserted table on
the transaction's ``sqlite3`` connection.  A compare-and-set that matched
nothing is :class:`~extension_fsm.errors.ConcurrencyConflict`; a driver error
is wrapped as SQLAlchemy would wrap it, for the store's translation.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Table, bindparam, insert, update
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError

from ...errors import ConcurrencyConflict
from .batch import BatchPart

__all__ = ["write_batch_sqlite"]

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
            if p is not None and v is not None:
                # One decision repeats the same instant in most of its rows.
                hit = memo.get((p, v)) if type(v) is datetime else None
                if hit is None:
                    hit = p(v)
                    if type(v) is datetime:
                        memo[(p, v)] = hit
                v = hit
            out.append(v)
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
