"""The outbox as the dispatcher sees it: claim with a lease, then mark.

A claim is one ``UPDATE … WHERE seq IN (SELECT … ORDER BY seq LIMIT n
[FOR UPDATE SKIP LOCKED]) RETURNING …``: the lease (``available_at`` pushed
forward) is what keeps two dispatchers from sending the same row at the same
time; a dispatcher that dies mid-delivery leaves the row to be claimed again
when the lease runs out (at-least-once; receivers dedupe on ``dedupe_key``).

A row with a ``lane`` is picked while no older row of its lane is
undelivered and not dead (``NOT EXISTS``, served by the lane index: the
lane's *head*), or when it follows such a head that the same statement locked
and every open row between them is picked too: one claim takes a lane's whole
run (one round trip for all of one call's rows).  Whether an older row
blocks does not depend on leases, and rows behind a head go only with it, so
two dispatchers can never hold rows of one lane at once: the head is leased
(or locked by the claim still running, and skipped) for every other claim.

The statements are built once per store with bound parameters.  The marks
of a claim's delivered rows are one ``UPDATE … WHERE id IN (…)``; rows
claimed behind a failed row are handed back (``release``) in one more.  Each call
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
    union_all,
    update,
)

from ...ports import OutboxMessage
from .engine import Database

__all__ = ["SqlOutboxStore"]


def open_(x: Any) -> Any:
    """Neither delivered nor dead."""
    return and_(x.c.delivered_at.is_(None), x.c.dead_at.is_(None))


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
        self._id_in: Any = self._ids(t.c.id)
        self._claim_all = self._claim()
        self._claim_ids = self._claim_listed()
        self._mark_delivered = update(t).where(self._id_in).values(delivered_at=bindparam("at"))
        if db.is_postgres:
            # The mark's commit does not wait for its WAL flush (set_config is
            # local to the statement's own transaction): a mark lost to a server
            # crash only means its rows are delivered again (at least once;
            # receivers drop repeats), in lane order, and any later claim that
            # relies on it (a row behind it now first of its lane) waits for its
            # own flush, which flushes the mark's earlier WAL with it.  Claims
            # wait: a lost lease could let a second dispatcher send a row still
            # being sent.
            no_wait = func.set_config("synchronous_commit", "off", True)
            self._mark_delivered = self._mark_delivered.where(no_wait.is_not(None))
        self._release = (
            update(t)
            .where(self._id_in, open_(t))
            .values(
                available_at=func.now()
                if db_clock
                else bindparam("at", type_=t.c.available_at.type)
            )
        )
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

    def _ids(self, col: Any) -> Any:
        """``col`` is one of the ``ids`` parameter."""
        if self._db.is_postgres:
            return col == any_(bindparam("ids", type_=ARRAY(String())))
        return col.in_(bindparam("ids", expanding=True))

    def _now_and_lease(self) -> tuple[Any, Any]:
        """A claim's clock and its lease's end: the database's ``now()`` when it
        is the one clock, else the caller's ``:now`` and ``:lease_until``."""
        t = self._t
        if not self._db_clock:
            return (
                bindparam("now", type_=t.c.available_at.type),
                bindparam("lease_until", type_=t.c.available_at.type),
            )
        lease = func.make_interval(0, 0, 0, 0, 0, 0, bindparam("lease_seconds", type_=Float()))
        return func.now(), func.now() + lease

    def _claimed_columns(self) -> list[Any]:
        """What a claim returns of each row it leased."""
        t = self._t
        return [
            t.c.seq,
            t.c.id,
            t.c.kind,
            t.c.dedupe_key,
            t.c.payload,
            t.c.created_at,
            t.c.attempts,
            t.c.lane,
        ]

    def _claim(self) -> Any:
        """Heads (rows with no open older row in their lane, or no lane),
        locked and skipped when locked, then behind each head the unbroken run
        of its lane's open rows that are available too:
        the lowest ``limit`` of them all by ``seq``, leased in one statement.

        A run is taken only behind a head this statement locked; while that
        head is open, every other claim finds its lane blocked (an open older
        row) or its head locked or leased, so one lane's rows are never held by
        two dispatchers.  Cutting at ``limit`` by ``seq`` keeps every run
        unbroken (older rows have lower ``seq``)."""
        t = self._t
        now, lease_until = self._now_and_lease()

        older = t.alias("older")
        blocked = exists().where(
            and_(older.c.lane == t.c.lane, older.c.seq < t.c.seq, open_(older))
        )
        heads_q = (
            select(t.c.seq, t.c.lane)
            .where(open_(t), t.c.available_at <= now, or_(t.c.lane.is_(None), ~blocked))
            .order_by(t.c.seq)
            .limit(bindparam("limit"))
        )
        if self._db.is_postgres:
            heads_q = heads_q.with_for_update(skip_locked=True)
        heads = heads_q.cte("heads")
        f, gap = t.alias("follower"), t.alias("gap")
        not_takeable = gap.c.available_at > now
        broken = exists().where(
            gap.c.lane == f.c.lane,
            gap.c.seq > heads.c.seq,
            gap.c.seq < f.c.seq,
            open_(gap),
            not_takeable,
        )
        followers = (
            select(f.c.seq)
            .join(heads, and_(f.c.lane == heads.c.lane, f.c.seq > heads.c.seq))
            .where(open_(f), f.c.available_at <= now, ~broken)
        )
        both = union_all(select(heads.c.seq), followers).subquery("both")
        pick = select(both.c.seq).order_by(both.c.seq).limit(bindparam("limit"))
        return (
            update(t)
            .where(t.c.seq.in_(pick.scalar_subquery()), open_(t), t.c.available_at <= now)
            .values(available_at=lease_until)
            .returning(*self._claimed_columns())
        )

    def _claim_listed(self) -> Any:
        """The claim of listed rows (a call's own, just written): each listed
        open, available row, locked (skipped when locked), is taken when every
        older open row of its lane is one this statement locked too, i.e. the
        lane's head and the unbroken run behind it; the lowest ``limit`` by
        ``seq``, leased in one statement.

        The same rule as :meth:`_claim`'s heads and runs, written from the
        listed rows outward: each is found by its unique id and checked
        against its own lane (the lane index), so a backlog of other open
        rows never makes a call's delivery scan it, whatever the planner's
        statistics say."""
        t = self._t
        now, lease_until = self._now_and_lease()
        # By id alone, so that only the unique index on ``id`` serves it; the
        # locked rows' state, as they are now, is judged below.
        mine_q = select(t.c.seq, t.c.lane, t.c.delivered_at, t.c.dead_at, t.c.available_at).where(
            self._ids(t.c.id)
        )
        if self._db.is_postgres:
            mine_q = mine_q.with_for_update(skip_locked=True)
        listed = mine_q.cte("listed")
        mine = (
            select(listed.c.seq, listed.c.lane)
            .where(open_(listed), listed.c.available_at <= now)
            .cte("mine")
        )
        older = t.alias("older")
        blocked = exists().where(
            older.c.lane == mine.c.lane,
            older.c.seq < mine.c.seq,
            open_(older),
            older.c.seq.not_in(select(mine.c.seq).scalar_subquery()),
        )
        pick = (
            select(mine.c.seq)
            .where(or_(mine.c.lane.is_(None), ~blocked))
            .order_by(mine.c.seq)
            .limit(bindparam("limit"))
        )
        return (
            update(t)
            .where(t.c.seq.in_(pick.scalar_subquery()))
            .values(available_at=lease_until)
            .returning(*self._claimed_columns())
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

    async def release(self, message_ids: Sequence[str], at: datetime) -> None:
        """Claimed but not tried (an older row of their lane failed first):
        available again at once, each still behind its lane's open rows."""
        if message_ids:
            await self._run(self._release, {"ids": list(message_ids), "at": at})

    async def mark_retry(self, message_id: str, available_at: datetime, error: str) -> None:
        """Failed for now: count the attempt, try again at ``available_at``."""
        params = {"message_id": message_id, "available_at": available_at, "error": error}
        await self._run(self._mark_retry, params)

    async def mark_dead(self, message_id: str, at: datetime, error: str) -> None:
        """Failed for good: kept for people to read, never retried."""
        await self._run(self._mark_dead, {"message_id": message_id, "at": at, "error": error})
