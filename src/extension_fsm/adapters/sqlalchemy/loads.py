"""The rows a decision reads, in one joined ``SELECT`` instead of one per row.

:class:`SqlSnapshotLoader` is what the unit of work offers as ``snapshots``
(:class:`~extension_fsm.ports.SnapshotLoader`): a request reads the session
(with its customer's display name), the payment session, the session's pending
extension and the payment's live one; an answer the session, the extension
and its payment; ``end_session`` the session, its pending extension and that
extension's payment; a timeout the same rows as an answer, starting from the
extension.  One statement sees one snapshot, so the rows agree with each other
under any isolation level.

Row locks on PostgreSQL (SQLite's unit of work holds the one write lock): a
timeout and the sweep *claim* the extension (``FOR UPDATE … SKIP LOCKED``: a
row another worker holds is skipped, as :meth:`ExtensionRepository.claim`
does); an answer and ``end_session`` *wait* for it (plain ``FOR UPDATE``,
bounded by the statement timeout), then decide on what committed: when the
holder changed the row meanwhile, ``REPEATABLE READ`` fails the read with a
serialization error, a ``ConcurrencyConflict``, and the service reads again.
So a mitra's reject that meets a sweep's approval in flight is told the
extension is already resolved, and one that holds the row first times the
extension out itself while the sweep skips it.

An answer never skips: on PostgreSQL it first locks the extension it answers
(plain ``FOR UPDATE``, waiting at most :data:`ANSWER_LOCK_TIMEOUT_MS` for a
worker that holds it, e.g. a sweep about to commit an approval), so it
decides on what that worker committed and nothing can resolve the extension
before the answer's own unit of work ends.  A wait that outlasts the bound,
or a row changed since the transaction's snapshot, is a
``ConcurrencyConflict``: the service starts the call over.

Each table's columns come back labelled ``<alias>_<column>``; at most one row
matches (primary keys, and the partial unique indexes for the pending and
live extensions).  The statements are built once per store.
"""

from __future__ import annotations

from datetime import datetime
from types import SimpleNamespace
from typing import Any, Protocol

from sqlalchemy import Row, Select, and_, bindparam, func, or_, select, true
from sqlalchemy.sql.expression import BindParameter, FromClause

from ...core import Snapshot, Undecidable
from .rows import _extension, _payment, _session
from .schema import Tables, UTCDateTime
from .statements import LIVE, PENDING

__all__ = ["ANSWER_LOCK_TIMEOUT_MS", "SnapshotStatements", "SqlSnapshotLoader"]

#: how long an answer waits for another worker's lock on its extension (ms)
ANSWER_LOCK_TIMEOUT_MS = 2000


class _Reader(Protocol):
    async def first(self, stmt: Any, params: Any = None) -> Row[Any] | None: ...

    async def rows(self, stmt: Any, params: Any = None) -> list[Row[Any]]: ...


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
        # An answer waits for the extension's row lock: the lock is taken in a
        # subquery (PostgreSQL locks no row on the nullable side of an outer join).
        answered = select(x).where(x.c.id == bindparam("extension_id"))
        if is_postgres:
            answered = answered.with_for_update()
        ax = answered.subquery("x")
        self.response = _Joined(
            {"s": session, "x": _part(x, "x", ax), "p": _part(p, "p")},
            with_customer.outerjoin(ax, ax.c.id == bindparam("extension_id")).outerjoin(
                p, p.c.id == ax.c.payment_session_id
            ),
            s.c.id == bindparam("session_id"),
            db_now,
        )
        ended = select(x).where(x.c.session_id == bindparam("session_id"), x.c.status == PENDING)
        if is_postgres:
            ended = ended.with_for_update()
        ex = ended.subquery("n")
        self.end = _Joined(
            {"s": session, "n": _part(x, "n", ex), "p": _part(p, "p")},
            with_customer.outerjoin(ex, ex.c.session_id == s.c.id).outerjoin(
                p, p.c.id == ex.c.payment_session_id
            ),
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
        # a row set aside until later is skipped, so it never blocks the rows behind it.
        now: Any = func.now() if db_now else bindparam("now", type_=x.c.expires_at.type)
        due = and_(
            x.c.status == PENDING,
            x.c.expires_at <= now,
            or_(x.c.set_aside_until.is_(None), x.c.set_aside_until <= now),
        )
        self.due = _Joined(dict(self.timeout.parts_columns), self.timeout.joins, due, db_now)
        self.due.select = self.due.select.order_by(x.c.expires_at, x.c.id).limit(bindparam("limit"))
        # The same rows' mitras, unlocked: whose presence to ask before claiming.
        self.due_mitras = (
            select(s.c.mitra_id)
            .select_from(x.join(s, s.c.id == x.c.session_id))
            .where(due)
            .order_by(x.c.expires_at, x.c.id)
            .limit(bindparam("limit"))
        )
        # An answer's lock: waits (bounded by this transaction's lock_timeout).
        self.lock_timeout: Select[Any] | None = None
        self.lock_extension: Select[Any] | None = None
        if is_postgres:  # on SQLite the unit of work already holds the one write lock
            self.timeout.select = self.timeout.select.with_for_update(of=x, skip_locked=True)
            self.due.select = self.due.select.with_for_update(of=x, skip_locked=True)
            self.lock_timeout = select(
                func.set_config("lock_timeout", f"{ANSWER_LOCK_TIMEOUT_MS}ms", true())
            )
            self.lock_extension = (
                select(x.c.id).where(x.c.id == bindparam("extension_id")).with_for_update()
            )


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
        if self._s.lock_extension is not None and self._s.lock_timeout is not None:
            await self._uow.first(self._s.lock_timeout)
            await self._uow.first(self._s.lock_extension, {"extension_id": extension_id})
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

    async def for_due(self, now: datetime, limit: int) -> list[Snapshot | Undecidable]:
        rows = await self._uow.rows(self._s.due.select, {"now": now, "limit": limit})
        snapshots: list[Snapshot | Undecidable] = []
        x = self._s.due.parts["x"]
        for row in rows:
            try:
                m = self._note(_rows(self._s.due, row))
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
