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
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, bindparam, exists, or_, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from ...ports import OutboxMessage
from .engine import Database

__all__ = ["SqlOutboxStore"]


class SqlOutboxStore:
    """:class:`~extension_fsm.ports.OutboxStore` over the outbox table."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._t = db.tables.outbox
        # Every call here is one statement, atomic on its own: on PostgreSQL it
        # runs without BEGIN/COMMIT (one round trip instead of three).
        self._autocommit = db.is_postgres and isinstance(db.engine, AsyncEngine)

        t = self._t
        # Built once: the dispatcher runs this once per delivered row.
        self._mark_delivered = (
            update(t).where(t.c.id == bindparam("message_id")).values(delivered_at=bindparam("at"))
        )

    async def _run(self, stmt: Any, params: Any = None) -> list[Any]:
        if self._autocommit:
            try:
                async with self._db.autocommit() as ac:
                    result = await ac.execute(stmt, params)
                    return list(result.all()) if result.returns_rows else []
            except DBAPIError as err:
                raise self._db.translate(err) from err
        conn = await self._db.begin()
        try:
            result = await conn.execute(stmt, params)
            rows = list(result.all()) if result.returns_rows else []
        except BaseException as err:
            await self._db.finish(conn, commit=False)
            if isinstance(err, DBAPIError):
                raise self._db.translate(err) from err
            raise
        await self._db.finish(conn, commit=True)
        return rows

    async def claim(
        self, now: datetime, limit: int, lease_seconds: float, ids: Sequence[str] | None = None
    ) -> list[OutboxMessage]:
        """Lease up to ``limit`` undelivered, available rows (only ``ids`` when given), in order."""
        t = self._t
        if limit <= 0 or (ids is not None and not ids):
            return []
        older = t.alias("older")
        blocked = exists().where(
            and_(
                older.c.lane == t.c.lane,
                older.c.seq < t.c.seq,
                older.c.delivered_at.is_(None),
                older.c.dead_at.is_(None),
            )
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
            .limit(limit)
        )
        if ids is not None:
            pick = pick.where(t.c.id.in_(list(ids)))
        if self._db.is_postgres:
            pick = pick.with_for_update(skip_locked=True)
        stmt = (
            update(t)
            .where(t.c.seq.in_(pick.scalar_subquery()))
            .values(available_at=now + timedelta(seconds=lease_seconds))
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
        rows = sorted(await self._run(stmt), key=lambda r: r.seq)
        return [
            OutboxMessage(
                id=r.id,
                kind=r.kind,
                dedupe_key=r.dedupe_key,
                payload=r.payload,
                created_at=r.created_at,
                attempts=r.attempts,
                lane=r.lane,
            )
            for r in rows
        ]

    async def mark_delivered(self, message_id: str, at: datetime) -> None:
        """Done: never claimed again."""
        await self._run(self._mark_delivered, {"message_id": message_id, "at": at})

    async def mark_retry(self, message_id: str, available_at: datetime, error: str) -> None:
        """Failed for now: count the attempt, try again at ``available_at``."""
        t = self._t
        await self._run(
            update(t)
            .where(t.c.id == message_id)
            .values(attempts=t.c.attempts + 1, available_at=available_at, last_error=error)
        )

    async def mark_dead(self, message_id: str, at: datetime, error: str) -> None:
        """Failed for good: kept for people to read, never retried."""
        t = self._t
        await self._run(
            update(t)
            .where(t.c.id == message_id)
            .values(attempts=t.c.attempts + 1, dead_at=at, last_error=error)
        )
