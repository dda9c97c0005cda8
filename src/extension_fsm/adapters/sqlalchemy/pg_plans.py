"""Statements compiled once for asyncpg, and the rows they return (:mod:`.pg_direct`).

A :class:`Plan` is one SQLAlchemy statement (Core or ``text()``) compiled by
the engine's own asyncpg dialect: its ``$n`` SQL text (the text SQLAlchemy
sends), where each parameter comes from, the column types' bind processors
for the values going in and result processors for the rows coming back (as
named tuples keyed like SQLAlchemy's rows).  An ``IN`` list has one ``$n``
per item, so such a statement's text is expanded for each call's values
(``construct_expanded_state``, as SQLAlchemy does).
"""

from __future__ import annotations

import re
from collections import namedtuple
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
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
    #: with an ``IN`` list (one ``$n`` per item): the compiled statement, expanded per call
    lists: Any = None
    by_name: Mapping[str, _Processor] | None = None

    def expanded(self, given: Mapping[str, Any]) -> tuple[str, list[Any]]:
        """SQL text and values of a statement with ``IN`` lists, for ``given``."""
        assert self.lists is not None and self.by_name is not None
        state = self.lists.construct_expanded_state(dict(given))
        args = []
        for name, value in zip(state.positiontup or (), state.positional_parameters, strict=True):
            # an item ``ids_2`` of the list ``ids`` goes through the list's processor
            proc = self.by_name.get(name, self.by_name.get(name.rsplit("_", 1)[0]))
            args.append(value if proc is None else proc(value))
        return state.statement, args

    def args(self, given: Mapping[str, Any], memo: dict[Any, Any] | None = None) -> list[Any]:
        """The positional values for ``given`` (named), each through its processor.

        ``memo``: processed datetimes by (processor, value), shared by the rows of
        one call (a decision repeats the same instant in most of its rows)."""
        out = []
        for name, default, proc in zip(self.names, self.defaults, self.processors, strict=True):
            value = given.get(name, default)
            if proc is None:
                out.append(value)
            elif memo is not None and type(value) is datetime:
                key = (proc, value)
                if key not in memo:
                    memo[key] = proc(value)
                out.append(memo[key])
            else:
                out.append(proc(value))
        return out

    def rows(self, records: Sequence[Any]) -> list[Any]:
        if self.row is None:  # text(): columns known only from the answer
            return [_record_row(r) for r in records]
        make, results = self.row, self.results
        return [
            make(v if p is None else p(v) for v, p in zip(r, results, strict=True)) for r in records
        ]


_ROW_TYPES: dict[tuple[str, ...], Callable[[Any], Any]] = {}


def _record_row(record: Any) -> Any:
    keys = tuple(record.keys())
    make = _ROW_TYPES.get(keys)
    if make is None:  # one class per shape of answer, not one per row
        if len(_ROW_TYPES) > 512:
            _ROW_TYPES.clear()
        make = _ROW_TYPES[keys] = namedtuple("Row", keys, rename=True)._make  # type: ignore[attr-defined]
    return make(record.values())


def compile_plan(stmt: Any, dialect: Dialect, keys: list[str] | None) -> Plan:
    """``stmt`` compiled for ``dialect`` (``keys``: the parameter names of an
    ``INSERT``/``UPDATE`` without ``.values()``)."""
    compiled = stmt.compile(dialect=dialect, column_keys=keys)
    binds = {name: bind for bind, name in compiled.bind_names.items()}
    names = tuple(compiled.positiontup or ())
    defaults, processors = [], []
    for name in names:
        defaults.append(binds[name].value)
        processors.append(binds[name].type.dialect_impl(dialect).bind_processor(dialect))
    lists, by_name = None, None
    if any(b.expanding for b in binds.values()):
        lists = compiled
        by_name = {
            n: b.type.dialect_impl(dialect).bind_processor(dialect) for n, b in binds.items()
        }
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
        lists,
        by_name,
    )


def rowcount(status: str) -> int:
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else -1
