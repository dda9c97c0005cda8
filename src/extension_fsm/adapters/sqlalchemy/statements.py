"""The store's hot statements, built once per schema, and the status literals.

Status filters are written as SQL literals, the very text of the partial
indexes' predicates (:mod:`.schema`): a planner can prove a partial index
usable only from constants (SQLite never does for ``IN (?, ?)``: it scanned
the table; a PostgreSQL generic plan never does for ``$n``).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, insert, literal_column, select, update
from sqlalchemy.sql.elements import ColumnClause

from ...model import ExtensionStatus
from .rows import _session_select
from .schema import Tables

__all__ = ["LIVE", "PENDING", "Statements", "statements"]

PENDING: ColumnClause[str] = literal_column(f"'{ExtensionStatus.PENDING.value}'")
LIVE: list[ColumnClause[str]] = [PENDING, literal_column(f"'{ExtensionStatus.ACCEPTED.value}'")]


class Statements:
    """The hot statements of one schema, built once.

    Building a SQLAlchemy statement (``update().where().values()``) and its
    cache key cost about as much as running a short statement (bench/); these
    are built once with bound parameters and run with a parameter dict.  An
    ``UPDATE`` without ``.values()`` takes its ``SET`` columns from the keys
    of that dict.
    """

    def __init__(self, t: Tables) -> None:
        def cas(table: Any) -> Any:
            return update(table).where(
                table.c.id == bindparam("cas_id"), table.c.status == bindparam("cas_expected")
            )

        x = t.extensions
        self.cas = {
            t.sessions.name: cas(t.sessions),
            t.payments.name: cas(t.payments),
            x.name: cas(x),
        }
        self.session_by_id = _session_select(t).where(t.sessions.c.id == bindparam("key"))
        self.payment_by_id = select(t.payments).where(t.payments.c.id == bindparam("key"))
        self.extension_by_id = select(x).where(x.c.id == bindparam("key"))
        self.extension_claim_pg = self.extension_by_id.with_for_update(skip_locked=True)
        self.pending_for_session = select(x).where(
            x.c.session_id == bindparam("key"), x.c.status == PENDING
        )
        self.live_for_payment = select(x).where(
            x.c.payment_session_id == bindparam("key"), x.c.status.in_(LIVE)
        )
        self.insert_extension = insert(x)
        self.insert_ledger = insert(t.ledger)
        self.insert_log = insert(t.log)
        self.insert_outbox = insert(t.outbox)


_STATEMENTS: dict[int, tuple[Tables, Statements]] = {}


def statements(t: Tables) -> Statements:
    """The statements of ``t`` (built on first use; the schema never changes)."""
    hit = _STATEMENTS.get(id(t))
    if hit is None or hit[0] is not t:
        hit = _STATEMENTS[id(t)] = (t, Statements(t))
    return hit[1]
