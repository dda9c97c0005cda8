"""What an operator asks of a running flow (``extension-fsm status``), and
requeueing dead outbox rows (``extension-fsm outbox retry-dead``).

Read-only but for :func:`retry_dead`; plain SQL over the reference tables
(any table prefix).  Needs the ``sql`` extra.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, column, func, inspect, not_, select, update

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from .adapters.sqlalchemy import SqlAlchemyStore, Tables

__all__ = ["collect_status", "missing_tables", "retry_dead"]

_PENDING = "pending"


async def collect_status(store: SqlAlchemyStore, now: datetime | None = None) -> dict[str, Any]:
    """Counts of extensions and outbox rows, in one read.

    ``{"extensions": {"by_status": {...}, "pending", "overdue",
    "oldest_overdue_seconds", "set_aside"}, "outbox": {"waiting", "retrying",
    "dead", "oldest_waiting_seconds"}, "at"}``.  ``overdue``: pending past its
    deadline (the sweep has not resolved it yet).  ``set_aside``: pending rows
    the sweep could not decide (what the host wrote there), counted on their
    own: never in ``overdue`` nor its age, so one odd row does not read as a
    sweep falling behind.  ``waiting``: undelivered rows never tried;
    ``retrying``: tried and due again; ``dead``: given up on.  ``set_aside``
    is ``None`` when the extensions table has no ``set_aside_until`` column.
    ``now`` defaults to the clock that judges the store's deadlines: the
    database's on PostgreSQL (see ``SqlAlchemyStore.open``), else this host's.
    """
    tables = store.tables
    db_clock = now is None and store.uses_database_clock
    at = now or datetime.now(UTC)
    return await store.database.run_sync(lambda conn: _collect(conn, tables, at, db_clock))


def _collect(conn: Connection, t: Tables, at: datetime, db_clock: bool) -> dict[str, Any]:
    x, o = t.extensions, t.outbox
    now = conn.execute(select(func.now(type_=x.c.expires_at.type))).scalar_one() if db_clock else at
    by_status = {
        str(status): int(n)
        for status, n in conn.execute(select(x.c.status, func.count()).group_by(x.c.status))
    }
    overdue_where: list[Any] = [x.c.status == _PENDING, x.c.expires_at < now]
    set_aside: int | None = None
    if "set_aside_until" in {c["name"] for c in inspect(conn).get_columns(x.name)}:
        # by name: the column may exist in the database before the Table knows it.
        # A sweep's claim (a lease, PostgreSQL) writes set_aside_until alone: a
        # row set aside has been counted too, and only it leaves "overdue".
        aside: Any = and_(column("set_aside_until").isnot(None), column("set_aside_count") > 0)
        flagged = select(func.count()).select_from(x).where(aside)
        set_aside = int(conn.execute(flagged).scalar_one())
        overdue_where.append(not_(aside))
    overdue, oldest = conn.execute(
        select(func.count(), func.min(x.c.expires_at)).select_from(x).where(*overdue_where)
    ).one()
    live = (o.c.delivered_at.is_(None), o.c.dead_at.is_(None))
    waiting, oldest_waiting = conn.execute(
        select(func.count(), func.min(o.c.created_at)).where(*live, o.c.attempts == 0)
    ).one()
    retrying = conn.execute(select(func.count()).where(*live, o.c.attempts > 0)).scalar_one()
    dead = conn.execute(select(func.count()).where(o.c.dead_at.isnot(None))).scalar_one()
    return {
        "at": now.isoformat(),
        "extensions": {
            "by_status": by_status,
            "pending": by_status.get(_PENDING, 0),
            "overdue": int(overdue),
            "oldest_overdue_seconds": _age(now, oldest),
            "set_aside": set_aside,
        },
        "outbox": {
            "waiting": int(waiting),
            "retrying": int(retrying),
            "dead": int(dead),
            "oldest_waiting_seconds": _age(now, oldest_waiting),
        },
    }


def _age(now: datetime, then: datetime | None) -> float | None:
    return None if then is None else round(max(0.0, (now - then).total_seconds()), 3)


async def retry_dead(store: SqlAlchemyStore, now: datetime | None = None) -> int:
    """Put every dead outbox row back in line (attempts reset, due now); how many.

    The last error is kept for people to read until the next attempt."""
    at = now or datetime.now(UTC)
    o = store.tables.outbox
    stmt = (
        update(o)
        .where(o.c.dead_at.isnot(None), o.c.delivered_at.is_(None))
        .values(dead_at=None, attempts=0, available_at=at)
    )
    return await store.database.run_sync(lambda conn: int(conn.execute(stmt).rowcount))


async def missing_tables(store: SqlAlchemyStore) -> list[str]:
    """The store's tables the database lacks (empty: it is migrated)."""
    names = [t.name for t in store.tables.metadata.sorted_tables]

    def check(conn: Connection) -> list[str]:
        found = inspect(conn)
        return [name for name in names if not found.has_table(name)]

    return await store.database.run_sync(check)
