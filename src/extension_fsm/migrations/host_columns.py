"""The types of a host's own columns, checked before a migration changes anything.

The Node service's tables were the host's, typed as the host chose.  The
library reads money exactly from any exact numeric column (``integer``,
``bigint``, ``numeric``) and times from any ``timestamp`` column, with or
without time zone (see :class:`~extension_fsm.adapters.sqlalchemy.schema.Money`
and :class:`~extension_fsm.adapters.sqlalchemy.schema.UTCDateTime`).  What it
cannot handle safely stops the migration, naming table and column:

- money in a ``real`` / ``double precision`` / ``float`` column (binary
  fractions: an amount is not held exactly), in ``text`` or anything else;
- a duration that is not an integer column;
- a time that is not a ``timestamp`` (``text``, ``date``, a number);
- an amount already stored with a fraction of a unit (``15000.50``): the
  library's amounts are whole units, and which whole amount was meant is a
  money decision for an operator (the rows' ids are named).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

__all__ = ["MONEY", "TIMES", "WHOLE", "refuse_unsafe_types"]

#: money columns: exact numeric types only
MONEY: dict[str, tuple[str, ...]] = {
    "payment_sessions": ("amount",),
    "customer_transactions": ("amount",),
    "session_extensions": ("requested_price",),
}
#: whole-number columns
WHOLE: dict[str, tuple[str, ...]] = {"session_extensions": ("requested_duration_minutes",)}
#: time columns: ``timestamp`` with or without time zone
TIMES: dict[str, tuple[str, ...]] = {
    "chat_sessions": ("expires_at",),
    "session_extensions": ("requested_at", "responded_at"),
    "customer_transactions": ("created_at",),
}


def _exact(kind: Any) -> bool:
    """An exact numeric type (``Float`` is a ``Numeric`` in SQLAlchemy)."""
    return isinstance(kind, sa.Integer) or (
        isinstance(kind, sa.Numeric) and not isinstance(kind, sa.Float)
    )


def _problem(check: str, kind: Any) -> str | None:
    if check == "money" and not _exact(kind):
        return (
            "money must be in an exact integer or numeric column;"
            " a float or text does not hold it exactly"
        )
    if check == "whole" and not isinstance(kind, sa.Integer):
        return "must be an integer column"
    if check == "time" and not isinstance(kind, sa.DateTime):
        return "a time must be a timestamp column (with or without time zone)"
    return None


def refuse_unsafe_types(bind: Connection, name: Callable[[str], str]) -> None:
    """Stop, naming each ``table.column`` and its type, when a host column the
    library reads has a type it cannot handle safely, or an amount already
    stored with a fraction of a unit; nothing is changed.  ``name`` maps a
    seed table name to the database's (the table prefix).  Missing tables or
    columns are left to the caller's own check."""
    inspector = sa.inspect(bind)
    problems: list[str] = []
    fractional: list[str] = []
    for check, columns in (("money", MONEY), ("whole", WHOLE), ("time", TIMES)):
        for table, wanted in columns.items():
            real = name(table)
            if not inspector.has_table(real):
                continue
            types = {c["name"]: c["type"] for c in inspector.get_columns(real)}
            for column in wanted:
                if column not in types:
                    continue
                kind = types[column]
                why = _problem(check, kind)
                if why is not None:
                    problems.append(f"{real}.{column} is {kind} ({why})")
                elif check == "money" and not isinstance(kind, sa.Integer):
                    fractional += _fractional_rows(bind, real, column)
    if fractional:
        whole = "amounts with a fraction of a unit (the library's amounts are whole): "
        problems.append(whole + ", ".join(fractional))
    if problems:
        raise RuntimeError(
            "the old service's tables have columns the library cannot handle safely: "
            + "; ".join(problems)
            + "; change them and run the upgrade again (nothing was changed)"
        )


def _fractional_rows(bind: Connection, table: str, column: str) -> list[str]:
    """``table.column`` of each row whose amount is not whole, by id (at most 20)."""
    t = sa.table(table, sa.column("id"), sa.column(column, sa.Numeric()))
    value = t.c[column]
    rows = bind.execute(
        sa.select(t.c.id, value)
        .where(value.is_not(None), value != sa.func.round(value))
        .order_by(t.c.id)
        .limit(20)
    ).all()
    return [f"{table}.{column} of {row[0]} is {row[1]}" for row in rows]
