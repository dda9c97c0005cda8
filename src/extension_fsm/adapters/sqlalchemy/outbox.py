"""The outbox as the dispatcher sees it: claim with a lease, then mark.

A claim is one ``UPDATE … WHERE seq IN (SELECT … ORDER BY seq LIMIT n
[FOR UPDATE SKIP LOCKED]) RETURNING …``: the lease (``available_at`` pushed
forward) is what keeps two dispatchers from sending the same row at the same
time; a dispatcher that dies mid-delivery leaves the row to be claimed again
when the lease runs out (at-least-once; receivers dedupe on ``dedupe_key``).

A row with a ``lane`` is picked only while no older row of its lane is
undelivered and not dead (``NOT EXISTS``, served by the lane index): a lane's
rows go out one at a time in the order written.  Whether an older row blocks
does not depend on locks or leases, so two dispatchers can never hold two
rows of one lane at once.

The statements are built once per store with bound parameters.  The marks
of a claim's delivered rows are one ``UPDATE … WHERE id IN (…)``.  Each call
is one statement, atomic on its own (:meth:`~.engine.Database.one_statement`:
autocommit on PostgreSQL, one round trip); marking rows delivered is the one
that is run again on a new connection when its pooled one turned out dead
(running it twice changes nothing).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ARRAY,
    Connection,
    Float,
    String,
    and_,
    any_,
    bindparam,
    exists,
    func,
    or_,
    select,
    update,
)

from ...ports import OutboxMessage
from .engine import Database

__all__ = ["SqlOutboxStore"]


class SqlOutboxStore:
    """:class:`~extension_fsm.ports.OutboxStore` over the outbox table."""

    def __init__(self, db: Database, *, db_clock: bool = False) -> None:
        self._db = db
        # ``db_clock``: leases are taken and judged by the database's ``now()``,
        # not by each dispatcher's clock (workers whose clocks disagree would
        # otherwise take each other's leased rows and send them twice).
        self._db_clock = db_clock
        self._t = t = db.tables.outbox
        # Lists of ids: an array on PostgreSQL (one statement text for any
        # length), an ``IN`` list elsewhere.
        if db.is_postgres:
            ids_param = bindparam("ids", type_=ARRAY(String()))
            self._id_in: Any = t.c.id == any_(ids_param)
        else:
            self._id_in = t.c.id.in_(bindparam("ids", expanding=True))
        self._claim_all = self._claim(with_ids=False)
        self._claim_ids = self._claim(with_ids=True)
        self._mark_delivered = update(t).where(self._id_in).values(delivered_at=bindparam("at"))
        self._mark_retry = (
            update(t)
            .where(t.c.id == bindparam("message_id"))
            .values(
                attempts=t.c.attempts + 1,
                available_at=bindparam("available_at"),
                last_error=bindparam("error"),
            )
        )
        self._mark_dead = (
            update(t)
            .where(t.c.id == bindparam("message_id"))
            .values(
                attempts=t.c.attempts + 1, dead_at=bindparam("at"), last_error=bindparam("error")
            )
        )

    def _claim(self, *, with_ids: bool) -> Any:
        t = self._t
        older = t.alias("older")
        blocked = exists().where(
            and_(
                older.c.lane == t.c.lane,
                older.c.seq < t.c.seq,
                older.c.delivered_at.is_(None),
                older.c.dead_at.is_(None),
            )
        )
        now: Any = bindparam("now", type_=t.c.available_at.type)
        lease_until: Any = bindparam("lease_until", type_=t.c.available_at.type)
        if self._db_clock:
            now = func.now()
            lease_until = func.now() + func.make_interval(
                0, 0, 0, 0, 0, 0, bindparam("lease_seconds", type_=Float())
            )
        pick = (
            select(t.c.seq)
            .where(
                t.c.delivered_at.is_(None),
                t.c.dead_at.is_(None),
                t.c.available_at <= now,
                or_(t.c.lane.is_(None), ~blocked),
            )
            .order_by(t.c.seq)
            .limit(bindparam("limit"))
        )
        if with_ids:
            pick = pick.where(self._id_in)
        if self._db.is_postgres:
            pick = pick.with_for_update(skip_locked=True)
        return (
            update(t)
            .where(t.c.seq.in_(pick.scalar_subquery()))
            .values(available_at=lease_until)
            .returning(
                t.c.seq,
                t.c.id,
                t.c.kind,
                t.c.dedupe_key,
                t.c.payload,
                t.c.created_at,
                t.c.attempts,
                t.c.lane,
            )
        )

    async def _run(self, stmt: Any, params: Any = None, *, retry: bool = False) -> list[Any]:
        def run(conn: Connection) -> list[Any]:
            result = conn.execute(stmt, params)
            return list(result.all()) if result.returns_rows else []

        return await self._db.one_statement(run, retry=retry)

    async def claim(
        self, now: datetime, limit: int, lease_seconds: float, ids: Sequence[str] | None = None
    ) -> list[OutboxMessage]:
        """Lease up to ``limit`` undelivered, available rows (only ``ids`` when given), in order.

        With the database's clock, ``now`` is not used: available and leased
        are judged by ``now()``, the one clock every dispatcher shares."""
        if limit <= 0 or (ids is not None and not ids):
            return []
        params: dict[str, Any] = {"limit": limit}
        if self._db_clock:
            params["lease_seconds"] = float(lease_seconds)
        else:
            params.update(now=now, lease_until=now + timedelta(seconds=lease_seconds))
        if ids is not None:
            params["ids"] = list(ids)
        stmt = self._claim_all if ids is None else self._claim_ids
        rows = sorted(await self._run(stmt, params), key=lambda r: r.seq)
        return [
            OutboxMessage(
                id=r.id,
                kind=r.kind,
                dedupe_key=r.dedupe_key,
                payload=r.payload,
                created_at=r.created_at,
                attempts=r.attempts,
                lane=r.lane,
                seq=r.seq,
            )
            for r in rows
        ]

    async def mark_delivered(self, message_ids: Sequence[str], at: datetime) -> None:
        """Done: never claimed again (every id of the list, one statement)."""
        if isinstance(message_ids, str):
            raise TypeError("mark_delivered takes a list of message ids")
        if message_ids:
            params = {"ids": list(message_ids), "at": at}
            await self._run(self._mark_delivered, params, retry=True)

    async def mark_retry(self, message_id: str, available_at: datetime, error: str) -> None:
        """Failed for now: count the attempt, try again at ``available_at``."""
        params = {"message_id": message_id, "available_at": available_at, "error": error}
        await self._run(self._mark_retry, params)

    async def mark_dead(self, message_id: str, at: datetime, error: str) -> None:
        """Failed for good: kept for people to read, never retried."""
        await self._run(self._mark_dead, {"message_id": message_id, "at": at, "error": error})
