"""Statements compiled once for asyncpg, and the rows they return (:mod:`.pg_direct`).

A :class:`Plan` is one SQLAlchemy statement (Core or ``text()``) compiled by
the engine's own asyncpg dialect: its ``$n`` SQL text (the text SQLAlchemy
sends), where each parameter comes from, the column types' bind processors
for the values going in and result processors for the rows coming back (as
named tuples keyed like SQLAlchemy's rows).  An ``IN`` list parameter is
expanded into the SQL text, so such a statement is compiled again per call.
"""

from __future__ import annotations

import re
from collections import namedtuple
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Dialect
from sqlalchemy.sql import Select

__all__ = ["DirectResult", "Plan", "compile_plan", "rowcount"]

#: a ``text()`` statement that answers with rows (others report a row count)
_TEXT_ROWS = re.compile(r"\s*(SELECT|WITH|VALUES|SHOW|TABLE|EXPLAIN)\b", re.IGNORECASE)
_Processor = Callable[[Any], Any] | None


class DirectResult:
    """The rows (named tuples) or the row count of one statement."""

    __slots__ = ("_rows", "rowcount")

    def __init__(self, rows: list[Any], rowcount: int) -> None:
        self._rows = rows
        self.rowcount = rowcount

    @property
    def returns_rows(self) -> bool:
        return bool(self._rows)

    def all(self) -> list[Any]:
        return self._rows

    def first(self) -> Any:
        return self._rows[0] if self._rows else None

    def one(self) -> Any:
        if len(self._rows) != 1:
            raise ValueError(f"expected one row, got {len(self._rows)}")
        return self._rows[0]

    def scalar(self) -> Any:
        return self._rows[0][0] if self._rows else None

    def __iter__(self) -> Iterator[Any]:
        return iter(self._rows)


@dataclass(frozen=True, slots=True)
class Plan:
    """A statement compiled once: SQL text, where each ``$n`` comes from, and
    how values go in and come out."""

    stmt: Any  # kept alive, so its id() is never reused while cached
    sql: str
    names: tuple[str, ...]
    defaults: tuple[Any, ...]
    processors: tuple[_Processor, ...]
    returns_rows: bool
    row: Callable[[Any], Any] | None  # a named tuple's ``_make``; None: the record's own keys
    results: tuple[_Processor, ...]
    expanding: bool  # an ``IN`` list parameter: compiled again with each call's values

    def args(self, given: Mapping[str, Any]) -> list[Any]:
        out = []
        for name, default, proc in zip(self.names, self.defaults, self.processors, strict=True):
            value = given.get(name, default)
            out.append(value if proc is None else proc(value))
        return out

    def rows(self, records: Sequence[Any]) -> list[Any]:
        if self.row is None:  # text(): columns known only from the answer
            return [_record_row(r) for r in records]
        make, results = self.row, self.results
        return [
            make(v if p is None else p(v) for v, p in zip(r, results, strict=True)) for r in records
        ]


def _record_row(record: Any) -> Any:
    keys = list(record.keys())
    return namedtuple("Row", keys, rename=True)._make(record.values())  # type: ignore[attr-defined]


def compile_plan(stmt: Any, dialect: Dialect, keys: list[str] | None) -> Plan:
    compiled = stmt.compile(
        dialect=dialect, column_keys=keys, compile_kwargs={"render_postcompile": True}
    )
    binds = {name: bind for bind, name in compiled.bind_names.items()}
    names = tuple(compiled.positiontup or ())
    expanding = any(b.expanding for b in binds.values())
    values = compiled.construct_params(_check=False) if expanding else {}
    defaults, processors = [], []
    for name in names:
        bind = binds.get(name, binds.get(name.rsplit("_", 1)[0]))  # an expanded ``IN`` item
        defaults.append(values.get(name, bind.value if bind is not None else None))
        impl = bind.type.dialect_impl(dialect) if bind is not None else None
        processors.append(impl.bind_processor(dialect) if impl is not None else None)
    columns: list[Any] | None = None
    if isinstance(stmt, Select):
        columns = list(stmt.selected_columns)
    elif compiled.isinsert or compiled.isupdate or compiled.isdelete:
        columns = list(stmt.exported_columns) if compiled.effective_returning else []
    if columns is None:  # text()
        returns_rows = bool(_TEXT_ROWS.match(compiled.string)) or (
            "RETURNING" in compiled.string.upper()
        )
        row, results = None, ()
    else:
        returns_rows = bool(columns)
        row = namedtuple("Row", [c.key for c in columns], rename=True)._make  # type: ignore[attr-defined]
        results = tuple(
            c.type.dialect_impl(dialect).result_processor(dialect, None) for c in columns
        )
    return Plan(
        stmt,
        compiled.string,
        names,
        tuple(defaults),
        tuple(processors),
        returns_rows,
        row,
        results,
        expanding,
    )


def rowcount(status: str) -> int:
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else -1
