"""PostgreSQL: every write of one decision in a single statement.

The writes of a decision (up to three compare-and-set ``UPDATE``\\s, the
ledger row, the audit records and the outbox rows) become one ``WITH …``
statement of data-modifying CTEs, one round trip instead of six.  Each CTE
returns a row per row it wrote and the statement returns those counts, so a
compare-and-set that matched nothing is seen and reported as
:class:`~extension_fsm.errors.ConcurrencyConflict`; the unit of work is then
rolled back, exactly as when the separate ``UPDATE`` found nothing.

The statements are built once per shape (which parts, how many rows) and run
with bound parameters: building one costs more than running it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import Table, bindparam, func, insert, literal_column, select, text, update
from sqlalchemy.dialects.postgresql import psycopg2

from ...errors import ConcurrencyConflict

__all__ = ["BatchPart", "write_batch"]


@dataclass(frozen=True, slots=True)
class BatchPart:
    """One table's share of the writes.

    ``cas`` = ``(row id, expected status)`` makes it a compare-and-set
    ``UPDATE`` of ``rows[0]``; ``None`` an ``INSERT`` of every row.
    """

    name: str
    table: Table
    rows: Sequence[Mapping[str, Any]]
    cas: tuple[str, str] | None = None


class _Executor(Protocol):
    async def execute(self, stmt: Any, params: Any = None) -> Any: ...


_CACHE: dict[tuple[Any, ...], Any] = {}
# Compiles to ``:name`` parameters without driver-specific casts.
_NAMED_PG = psycopg2.dialect(paramstyle="named")  # type: ignore[no-untyped-call]


def _shape(parts: Sequence[BatchPart]) -> tuple[Any, ...]:
    return tuple((p.name, p.table, p.cas is not None, len(p.rows), tuple(p.rows[0])) for p in parts)


def _build(parts: Sequence[BatchPart]) -> Any:
    ctes = []
    for p in parts:
        t = p.table
        if p.cas is not None:
            dml: Any = (
                update(t)
                .where(
                    t.c.id == bindparam(f"{p.name}_cas_id", type_=t.c.id.type),
                    t.c.status == bindparam(f"{p.name}_cas_expected", type_=t.c.status.type),
                )
                .values({c: bindparam(f"{p.name}_{c}", type_=t.c[c].type) for c in p.rows[0]})
            )
        else:
            dml = insert(t).values(
                [
                    {c: bindparam(f"{p.name}{i}_{c}", type_=t.c[c].type) for c in row}
                    for i, row in enumerate(p.rows)
                ]
            )
        ctes.append(dml.returning(literal_column("1").label("one")).cte(p.name))
    stmt = select(
        *[select(func.count()).select_from(c).scalar_subquery().label(c.name) for c in ctes]
    )
    # Frozen into text once: a Core statement this size costs more to key for
    # the compiled cache on every execution than the round trip it saves.
    compiled = stmt.compile(dialect=_NAMED_PG)
    # ``:name::JSON`` would hide the parameter from text(); spell the cast out.
    sql = re.sub(r"(:\w+)::(\w+)", r"CAST(\1 AS \2)", compiled.string)
    return text(sql).bindparams(*compiled.binds.values())


def _params(parts: Sequence[BatchPart]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for p in parts:
        if p.cas is not None:
            params[f"{p.name}_cas_id"], params[f"{p.name}_cas_expected"] = p.cas
            params.update({f"{p.name}_{c}": v for c, v in p.rows[0].items()})
        else:
            for i, row in enumerate(p.rows):
                params.update({f"{p.name}{i}_{c}": v for c, v in row.items()})
    return params


async def write_batch(uow: _Executor, parts: Sequence[BatchPart]) -> None:
    """Run ``parts`` as one statement; a missed compare-and-set is a lost race."""
    parts = [p for p in parts if p.rows]
    if not parts:
        return
    key = _shape(parts)
    stmt = _CACHE.get(key)
    if stmt is None:
        if len(_CACHE) > 512:  # shapes are few per schema; many short-lived stores are not
            _CACHE.clear()
        stmt = _CACHE[key] = _build(parts)
    counts = (await uow.execute(stmt, _params(parts))).one()
    for p, written in zip(parts, counts, strict=True):
        wanted = 1 if p.cas is not None else len(p.rows)
        if written != wanted:
            raise ConcurrencyConflict(f"{p.table.name} {p.cas[0] if p.cas else ''} moved")
