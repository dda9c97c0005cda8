"""The rows a decision reads, in one joined ``SELECT`` instead of one per row.

:class:`SqlSnapshotLoader` is what the unit of work offers as ``snapshots``
(:class:`~extension_fsm.ports.SnapshotLoader`): a request reads the session
(with its customer's display name), the payment session, the session's pending
extension and the payment's live one; an answer the session, the extension
and its payment; ``end_session`` the session, its pending extension and that
extension's payment; a timeout the same rows as an answer, starting from the
extension.  One statement sees one snapshot, so the rows agree with each other
under any isolation level.

No row locks: each read is one statement, atomic on its own, and the
decision's write is guarded by the status and the values read
(:meth:`.statements.Statements.decision`), so a row that moved in between
makes the write do nothing and the service read again.  A mitra's reject
that meets a sweep's approval is told the extension is already resolved when
the approval was written first; written first itself (a late no times the
extension out, uncharged), it makes the approval's write do nothing.

The sweep *claims* its batch on PostgreSQL: one ``UPDATE … SET
set_aside_until = now() + lease WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED)
RETURNING …`` joined to the sessions and payments, so two sweepers never
take the same rows (:data:`CLAIM_LEASE`), and a sweeper that dies after
claiming leaves its rows to be claimed again when the lease runs out.  Only
rows whose mitra's presence was gathered are claimed (``mitras``).  On
SQLite the unit of work holds the one write lock, so the batch is read.

Each table's columns come back labelled ``<alias>_<column>``; at most one row
matches (primary keys, and the partial unique indexes for the pending and
live extensions).  The statements are built once per store.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any, Protocol

from sqlalchemy import (
    ARRAY,
    Interval,
    Row,
    Select,
    String,
    and_,
    any_,
    bindparam,
    exists,
    func,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.sql.expression import BindParameter, FromClause

from ...core import Snapshot, Undecidable
from .rows import _extension, _payment, _session
from .schema import Tables, UTCDateTime
from .statements import LIVE, PENDING

__all__ = ["CLAIM_LEASE", "SnapshotStatements", "SqlSnapshotLoader"]

#: how long a sweep's claim keeps other sweepers off its rows (PostgreSQL)
CLAIM_LEASE = timedelta(seconds=15)


class _Reader(Protocol):
    async def first(self, stmt: Any, params: Any = None) -> Row[Any] | None: ...

    async def rows(self, stmt: Any, params: Any = None) -> list[Row[Any]]: ...

    async def claim(self, stmt: Any, params: Any = None) -> list[Row[Any]]: ...


class _Part:
    """Where one table's columns sit in a joined row, and their plain names."""

    __slots__ = ("names", "start", "stop")

    def __init__(self, names: list[str], start: int) -> None:
        self.names = names
        self.start = start
        self.stop = start + len(names)

    def of(self, row: Row[Any]) -> SimpleNamespace | None:
        """The table's columns by plain name; ``None`` when the join found no row."""
        values = row[self.start : self.stop]
        if values[0] is None:  # the primary key (first column) of an outer-joined row
            return None
        return SimpleNamespace(**dict(zip(self.names, values, strict=True)))


def _part(table: FromClause, prefix: str, source: FromClause | None = None) -> list[Any]:
    # By key, not SQL name: a seed layout's ``requested_price`` is ``price`` here.
    # ``source``: a subquery of ``table`` the columns are read from instead.
    if source is None:
        return [c.label(f"{prefix}_{c.key}") for c in table.c]
    return [source.c[c.key].label(f"{prefix}_{c.key}") for c in table.c]


class _Joined:
    """A joined ``SELECT`` and where each table's columns sit in its rows; with
    ``db_now`` its last column is the database's clock (``now()``)."""

    def __init__(
        self, parts: dict[str, list[Any]], joins: FromClause, where: Any, db_now: bool
    ) -> None:
        self.parts_columns = parts
        self.joins = joins
        self.db_now = db_now
        self.parts: dict[str, _Part] = {}
        columns: list[Any] = []
        for name, cols in parts.items():
            self.parts[name] = _Part([c.name.split("_", 1)[1] for c in cols], len(columns))
            columns.extend(cols)
        if db_now:  # read with the rows: no extra round trip for the time
            columns.append(func.now(type_=UTCDateTime()).label("db_now"))
        self.select: Select[Any] = select(*columns).select_from(joins).where(where)


class SnapshotStatements:
    """The joined reads of one schema, built once per store."""

    def __init__(self, t: Tables, *, is_postgres: bool, db_now: bool) -> None:
        s, c, x, p = t.sessions, t.customers, t.extensions, t.payments
        pend, live = x.alias("pend"), x.alias("live")
        session = [*_part(s, "s"), c.c.display_name.label("s_display_name")]
        with_customer = s.outerjoin(c, c.c.id == s.c.customer_id)
        payment_id: BindParameter[Any] = bindparam("payment_id")
        self.request = _Joined(
            {"s": session, "p": _part(p, "p"), "n": _part(pend, "n"), "l": _part(live, "l")},
            with_customer.outerjoin(p, p.c.id == payment_id)
            .outerjoin(live, and_(live.c.payment_session_id == payment_id, live.c.status.in_(LIVE)))
            .outerjoin(pend, and_(pend.c.session_id == s.c.id, pend.c.status == PENDING)),
            s.c.id == bindparam("session_id"),
            db_now,
        )
        self.response = _Joined(
            {"s": session, "x": _part(x, "x"), "p": _part(p, "p")},
            with_customer.outerjoin(x, x.c.id == bindparam("extension_id")).outerjoin(
                p, p.c.id == x.c.payment_session_id
            ),
            s.c.id == bindparam("session_id"),
            db_now,
        )
        self.end = _Joined(
            {"s": session, "n": _part(pend, "n"), "p": _part(p, "p")},
            with_customer.outerjoin(
                pend, and_(pend.c.session_id == s.c.id, pend.c.status == PENDING)
            ).outerjoin(p, p.c.id == pend.c.payment_session_id),
            s.c.id == bindparam("session_id"),
            db_now,
        )
        self.timeout = _Joined(
            {"x": _part(x, "x"), "s": session, "p": _part(p, "p")},
            x.outerjoin(s, s.c.id == x.c.session_id)
            .outerjoin(c, c.c.id == s.c.customer_id)
            .outerjoin(p, p.c.id == x.c.payment_session_id),
            x.c.id == bindparam("extension_id"),
            db_now,
        )
        # Due at the database's clock when it is the one, else at the caller's;
        # a row set aside (or claimed) until later is skipped, so it never
        # blocks the rows behind it.
        now: Any = func.now() if db_now else bindparam("now", type_=x.c.expires_at.type)
        due = and_(
            x.c.status == PENDING,
            x.c.expires_at <= now,
            or_(x.c.set_aside_until.is_(None), x.c.set_aside_until <= now),
        )
        self.due_of: _Joined | None = None
        if is_postgres:  # a claim: the due rows' lease written and returned at once
            self.due = self._claim(t, due, now, db_now, by_mitra=False)
            self.due_of = self._claim(t, due, now, db_now, by_mitra=True)
        else:  # the unit of work holds SQLite's one write lock: a read
            self.due = _Joined(dict(self.timeout.parts_columns), self.timeout.joins, due, db_now)
            self.due.select = self.due.select.order_by(x.c.expires_at, x.c.id).limit(
                bindparam("limit")
            )
        # The same rows' ids, unclaimed: the sweep's row-by-row pass.
        self.due_ids = (
            select(x.c.id).where(due).order_by(x.c.expires_at, x.c.id).limit(bindparam("limit"))
        )
        # The same rows' mitras, unclaimed: whose presence to ask before claiming.
        self.due_mitras = (
            select(s.c.mitra_id)
            .select_from(x.join(s, s.c.id == x.c.session_id))
            .where(due)
            .order_by(x.c.expires_at, x.c.id)
            .limit(bindparam("limit"))
        )

    def _claim(self, t: Tables, due: Any, now: Any, db_now: bool, *, by_mitra: bool) -> _Joined:
        """PostgreSQL: ``UPDATE`` the lease of up to ``:limit`` due rows (``FOR
        UPDATE SKIP LOCKED``: rows another claim is taking are skipped) and read
        them joined to their sessions and payments, in one statement; with
        ``by_mitra`` only rows whose session's mitra is one of ``:mitras``."""
        s, c, x, p = t.sessions, t.customers, t.extensions, t.payments
        pick = select(x.c.id).where(due)
        if by_mitra:  # no other mitra's session (a row whose session is gone needs no one)
            asked = s.c.mitra_id == any_(bindparam("mitras", type_=ARRAY(String())))
            pick = pick.where(~exists(select(s.c.id).where(s.c.id == x.c.session_id, ~asked)))
        pick = (
            pick.order_by(x.c.expires_at, x.c.id)
            .limit(bindparam("limit"))
            .with_for_update(skip_locked=True)
        )
        claimed = (
            update(x)
            .where(x.c.id.in_(pick.scalar_subquery()))
            .values(set_aside_until=now + literal(CLAIM_LEASE, Interval()))
            .returning(*x.c)
            .cte("claimed")
        )
        session = [*_part(s, "s"), c.c.display_name.label("s_display_name")]
        joined = _Joined(
            {"x": _part(x, "x", claimed), "s": session, "p": _part(p, "p")},
            claimed.outerjoin(s, s.c.id == claimed.c.session_id)
            .outerjoin(c, c.c.id == s.c.customer_id)
            .outerjoin(p, p.c.id == claimed.c.payment_session_id),
            literal(True),
            db_now,
        )
        joined.select = joined.select.order_by(claimed.c.expires_at, claimed.c.id)
        return joined


def _rows(joined: _Joined, row: Row[Any]) -> dict[str, Any]:
    """Each table's model (``None`` where the outer join found no row), and
    ``now``: the database's clock, or ``None`` when the statement has none."""
    models: dict[str, Any] = {"now": row[-1] if joined.db_now else None}
    for name, part in joined.parts.items():
        values = part.of(row)
        if values is None:
            models[name] = None
        elif name == "s":
            models[name] = _session(values)
        elif name == "p":
            models[name] = _payment(values)
        else:
            models[name] = _extension(values)
    return models


#: which kind of row each part of a joined read is: session, payment, extension
_KIND = {"s": "s", "p": "p", "x": "x", "n": "x", "l": "x"}


class SqlSnapshotLoader:
    """:class:`~extension_fsm.ports.SnapshotLoader` over one unit of work.

    With ``db_clock`` (PostgreSQL) every snapshot carries the database's
    ``now()``, read in the same statement, and due rows are due by it."""

    def __init__(self, uow: _Reader, statements: SnapshotStatements, seen: dict[str, Any]) -> None:
        self._uow = uow
        self._s = statements
        self._seen = seen  # every row read, by id: what a write compares against

    def _note(self, models: dict[str, Any]) -> dict[str, Any]:
        for name, model in models.items():
            if name != "now" and model is not None:
                self._seen[f"{_KIND[name]}:{model.id}"] = model
        return models

    async def _load(self, joined: _Joined, params: dict[str, Any]) -> dict[str, Any] | None:
        row = await self._uow.first(joined.select, params)
        return None if row is None else self._note(_rows(joined, row))

    async def for_request(self, session_id: str, payment_id: str | None) -> Snapshot:
        params = {"session_id": session_id, "payment_id": payment_id or None}
        m = await self._load(self._s.request, params)
        if m is None:
            return Snapshot(session=None)
        return Snapshot(
            session=m["s"], payment=m["p"], pending=m["n"], payment_live=m["l"], now=m["now"]
        )

    async def for_response(self, session_id: str, extension_id: str) -> Snapshot:
        params = {"session_id": session_id, "extension_id": extension_id}
        m = await self._load(self._s.response, params)
        if m is None:
            return Snapshot(session=None)
        return Snapshot(session=m["s"], extension=m["x"], payment=m["p"], now=m["now"])

    async def for_end(self, session_id: str) -> Snapshot:
        m = await self._load(self._s.end, {"session_id": session_id})
        if m is None:
            return Snapshot(session=None)
        return Snapshot(session=m["s"], pending=m["n"], payment=m["p"], now=m["now"])

    async def for_timeout(self, extension_id: str) -> Snapshot:
        m = await self._load(self._s.timeout, {"extension_id": extension_id})
        if m is None:
            return Snapshot(session=None)
        return Snapshot(session=m["s"], extension=m["x"], payment=m["p"], now=m["now"])

    async def for_due(
        self, now: datetime, limit: int, mitras: Collection[str] | None = None
    ) -> list[Snapshot | Undecidable]:
        params: dict[str, Any] = {"now": now, "limit": limit}
        due = self._s.due
        if self._s.due_of is None:  # SQLite: read inside the unit of work's write lock
            rows = await self._uow.rows(due.select, params)
        else:
            if mitras is not None:
                due, params["mitras"] = self._s.due_of, sorted(mitras)
            rows = await self._uow.claim(due.select, params)
        snapshots: list[Snapshot | Undecidable] = []
        x = due.parts["x"]
        for row in rows:
            try:
                m = self._note(_rows(due, row))
            except (ValueError, TypeError, KeyError) as err:  # what the host wrote does not parse
                snapshots.append(Undecidable(str(row[x.start]), f"{type(err).__name__}: {err}"))
                continue
            snapshots.append(
                Snapshot(session=m["s"], extension=m["x"], payment=m["p"], now=m["now"])
            )
        return snapshots

    async def mitras_due(self, now: datetime, limit: int) -> set[str]:
        rows = await self._uow.rows(self._s.due_mitras, {"now": now, "limit": limit})
        return {row[0] for row in rows}

    async def due_ids(self, now: datetime, limit: int) -> list[str]:
        rows = await self._uow.rows(self._s.due_ids, {"now": now, "limit": limit})
        return [str(row[0]) for row in rows]
