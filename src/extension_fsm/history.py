"""One extension's life, for support (``extension-fsm history``).

When a customer asks "why was I charged?" or a mitra says "I never saw the
request", the answer is in three tables: the audit log (every move of the
extension, of its session and of its payment, with who or what made it), the
outbox (every notification and session-timer command, with its attempts,
last error and when it was delivered or given up on) and, among the outbox
rows, the payment events told to the host.  :func:`load_history` reads them
with SQLAlchemy Core in one read-only transaction; the ``render_*`` functions
print them as a table, a JSON document or a Mermaid sequence diagram.

Which rows belong to an extension: its own log rows; its session's and its
payment's log rows written at the same moment as one of its own (one
decision writes them together); the outbox rows whose dedupe key starts with
its id or whose payload names it; and its session's session-timer rows
written within a few seconds of one of its moves (the rows carry the
writer's clock, the moves the store's).  Needs the ``sql`` extra.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import or_, select

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from .adapters.sqlalchemy import SqlAlchemyStore, Tables

__all__ = [
    "FORMATS",
    "Delivery",
    "ExtensionHistory",
    "Move",
    "load_history",
    "render",
]

#: the output formats of ``extension-fsm history``
FORMATS = ("table", "json", "sequence")
#: a session-timer row belongs to a move of the extension written this close to it
_SKEW = timedelta(seconds=5)
#: outbox rows are looked for this far around the extension's moves
_SKEW_WINDOW = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class Move:
    """One audit-log row: ``entity`` (extension, session or payment) went
    ``from_status`` -> ``to_status`` on ``event``, made by ``actor``."""

    at: datetime
    entity: str
    entity_id: str
    from_status: str | None
    to_status: str
    event: str
    cause: str | None
    actor: str


@dataclass(frozen=True, slots=True)
class Delivery:
    """One outbox row: a notification, a session-timer command or a payment
    event, with what became of it."""

    kind: str
    what: str
    to: str
    created_at: datetime
    attempts: int
    delivered_at: datetime | None
    dead_at: datetime | None
    next_attempt_at: datetime | None
    last_error: str | None
    push: bool

    @property
    def outcome(self) -> str:
        """``delivered``, ``dead`` (given up on) or ``waiting``."""
        if self.delivered_at is not None:
            return "delivered"
        return "dead" if self.dead_at is not None else "waiting"


@dataclass(frozen=True, slots=True)
class ExtensionHistory:
    """Everything the tables know about one extension."""

    extension: dict[str, Any]
    moves: list[Move]
    deliveries: list[Delivery]
    payment_events: list[Delivery]


async def load_history(
    store: SqlAlchemyStore, *, extension_id: str | None = None, session_id: str | None = None
) -> list[ExtensionHistory]:
    """The history of ``extension_id``, or of every extension of
    ``session_id`` (oldest first); empty when there is none.  Reads only."""
    if (extension_id is None) == (session_id is None):
        raise ValueError("give extension_id or session_id (one of them)")
    tables = store.tables
    return await store.database.run_sync(lambda conn: _load(conn, tables, extension_id, session_id))


def _load(
    conn: Connection, t: Tables, extension_id: str | None, session_id: str | None
) -> list[ExtensionHistory]:
    x = t.extensions
    query = select(x).order_by(x.c.requested_at, x.c.id)
    if extension_id is not None:
        query = query.where(x.c.id == extension_id)
    else:
        query = query.where(x.c.session_id == session_id)
    return [_one(conn, t, dict(row._mapping)) for row in conn.execute(query)]


def _one(conn: Connection, t: Tables, ext: dict[str, Any]) -> ExtensionHistory:
    log, o = t.log, t.outbox
    ext_id, session, payment = ext["id"], ext["session_id"], ext["payment_session_id"]
    own = [
        _move(r)
        for r in conn.execute(
            select(log)
            .where(log.c.entity == "extension", log.c.entity_id == ext_id)
            .order_by(log.c.seq)
        )
    ]
    moments = {m.at for m in own}
    moves = list(own)
    if moments:
        related = (
            select(log)
            .where(
                or_(
                    (log.c.entity == "session") & (log.c.entity_id == session),
                    (log.c.entity == "payment") & (log.c.entity_id == payment),
                ),
                log.c.at.in_(moments),
            )
            .order_by(log.c.seq)
        )
        moves += [_move(r) for r in conn.execute(related)]
    moves.sort(key=lambda m: m.at)  # stable: a decision's rows keep their order
    # Rows are stamped by the writer's clock, moves by the store's (the
    # database's, on PostgreSQL): the window and the match allow for skew.
    first = ext["requested_at"] - _SKEW_WINDOW
    last = max(moments, default=ext["requested_at"]) + _SKEW_WINDOW
    rows = conn.execute(
        select(o)
        .where(
            or_(
                o.c.dedupe_key.startswith(f"{ext_id}:", autoescape=True),
                o.c.kind.in_(("payment", "session_timer")),
            ),
            o.c.created_at.between(first, last),
        )
        .order_by(o.c.seq)
    )
    siblings = _session_moves(conn, t, session)
    deliveries: list[Delivery] = []
    payments: list[Delivery] = []
    for r in rows:
        payload = r.payload if isinstance(r.payload, dict) else {}
        mine = str(r.dedupe_key).startswith(f"{ext_id}:") or payload.get("extension_id") == ext_id
        timer = r.kind == "session_timer" and payload.get("session_id") == session
        if not (mine or (timer and _nearest(r.created_at, siblings) == ext_id)):
            continue
        row = _delivery(r, payload)
        (payments if r.kind == "payment" else deliveries).append(row)
    return ExtensionHistory(ext, moves, deliveries, payments)


def _session_moves(conn: Connection, t: Tables, session: str) -> list[tuple[datetime, str]]:
    """``(at, extension id)`` of every move of every extension of ``session``."""
    log, x = t.log, t.extensions
    ids = select(x.c.id).where(x.c.session_id == session).scalar_subquery()
    query = select(log.c.at, log.c.entity_id).where(
        log.c.entity == "extension", log.c.entity_id.in_(ids)
    )
    return [(r.at, str(r.entity_id)) for r in conn.execute(query)]


def _nearest(at: datetime, moves: list[tuple[datetime, str]]) -> str | None:
    """The extension whose move is nearest ``at`` (within the skew), if any: a
    session-timer row names only its session, and is the work of that move."""
    near = [(abs(at - when), ext_id) for when, ext_id in moves if abs(at - when) <= _SKEW]
    return min(near)[1] if near else None


def _move(r: Any) -> Move:
    return Move(
        r.at, r.entity, str(r.entity_id), r.from_status, r.to_status, r.event, r.cause, r.actor
    )


def _delivery(r: Any, payload: dict[str, Any]) -> Delivery:
    message = payload.get("message")
    if r.kind == "notify" and isinstance(message, dict):
        what, to = str(message.get("type")), f"{payload.get('recipient')} {payload.get('user_id')}"
    elif r.kind == "payment":
        what, to = f"payment {payload.get('action')}", f"host ({payload.get('payment_session_id')})"
    else:
        what, to = str(payload.get("action", r.kind)), "session timer"
    live = r.delivered_at is None and r.dead_at is None
    return Delivery(
        kind=str(r.kind),
        what=what,
        to=to,
        created_at=r.created_at,
        attempts=int(r.attempts),
        delivered_at=r.delivered_at,
        dead_at=r.dead_at,
        next_attempt_at=r.available_at if live and r.attempts else None,
        last_error=r.last_error,
        push=payload.get("push") is not None,
    )


# ------------------------------------------------------------------ rendering


def render(histories: list[ExtensionHistory], fmt: str) -> str:
    """``histories`` as ``table`` (plain text), ``json`` or ``sequence`` (Mermaid)."""
    if fmt == "json":
        return json.dumps([_document(h) for h in histories], indent=2, ensure_ascii=False) + "\n"
    if fmt == "sequence":
        return _sequence(histories)
    if fmt == "table":
        return "\n".join(_table(h) for h in histories)
    raise ValueError(f"unknown format {fmt!r} ({', '.join(FORMATS)})")


def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat()


def _document(h: ExtensionHistory) -> dict[str, Any]:
    ext = {k: (_iso(v) if isinstance(v, datetime) else v) for k, v in h.extension.items()}
    return {
        "extension": ext,
        "moves": [
            {
                "at": _iso(m.at),
                "entity": m.entity,
                "id": m.entity_id,
                "from": m.from_status,
                "to": m.to_status,
                "event": m.event,
                "cause": m.cause,
                "by": m.actor,
            }
            for m in h.moves
        ],
        "deliveries": [_delivery_doc(d) for d in h.deliveries],
        "payment_events": [_delivery_doc(d) for d in h.payment_events],
    }


def _delivery_doc(d: Delivery) -> dict[str, Any]:
    return {
        "kind": d.kind,
        "what": d.what,
        "to": d.to,
        "push": d.push,
        "created_at": _iso(d.created_at),
        "attempts": d.attempts,
        "outcome": d.outcome,
        "delivered_at": _iso(d.delivered_at),
        "dead_at": _iso(d.dead_at),
        "next_attempt_at": _iso(d.next_attempt_at),
        "last_error": d.last_error,
    }


def _time(at: datetime | None) -> str:
    return "-" if at is None else at.strftime("%H:%M:%S")


def _grid(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(c) for c in col) for col in zip(header, *rows, strict=True)]
    line = "  ".join("-" * w for w in widths)
    fmt = [
        "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()
        for cells in [header, *rows]
    ]
    return [fmt[0], line, *fmt[1:]]


def _table(h: ExtensionHistory) -> str:
    e = h.extension
    via = " by the deadline" if e.get("via_timeout") else ""
    via += f" ({e['reason']})" if e.get("reason") else ""
    out = [
        f"extension {e['id']}: {e['status']}{via}",
        f"  session {e['session_id']}, payment {e['payment_session_id']}, "
        f"+{e['duration_minutes']} min for {e['price']}",
        f"  requested {_iso(e['requested_at'])}, answer due {_iso(e['expires_at'])}, "
        f"answered {_iso(e['responded_at']) or '-'}",
        "",
        "moves",
    ]
    out += _grid(
        ["at", "what", "from", "to", "event", "by", "cause"],
        [
            [
                _time(m.at),
                f"{m.entity} {m.entity_id}" if m.entity != "extension" else "extension",
                m.from_status or "-",
                m.to_status,
                m.event,
                m.actor,
                m.cause or "",
            ]
            for m in h.moves
        ],
    )
    for title, rows in (("deliveries", h.deliveries), ("payment events", h.payment_events)):
        out += ["", title]
        if not rows:
            out.append("(none)")
            continue
        out += _grid(
            ["created", "what", "to", "failed tries", "outcome", "at", "last error"],
            [
                [
                    _time(d.created_at),
                    d.what + (" (+push)" if d.push else ""),
                    d.to,
                    str(d.attempts),
                    d.outcome,
                    _time(d.delivered_at or d.dead_at or d.next_attempt_at),
                    d.last_error or "",
                ]
                for d in rows
            ],
        )
    return "\n".join(out) + "\n"


_LIFELINE = {"customer": "C", "mitra": "M", "system": "S", "host": "S"}


def _sequence(histories: list[ExtensionHistory]) -> str:
    lines = [
        "sequenceDiagram",
        "    participant C as Customer",
        "    participant S as Server",
        "    participant M as Mitra",
        "    participant H as Host",
    ]
    for h in histories:
        events: list[tuple[datetime, int, list[str]]] = []
        for m in h.moves:
            if m.entity != "extension":
                continue
            who = _LIFELINE.get(m.actor, "S")
            cause = f" ({m.cause})" if m.cause else ""
            text = f"{_time(m.at)} {m.event}: {m.from_status or 'new'} → {m.to_status}{cause}"
            arrow = f"    {who}->>S: {text}" if who != "S" else f"    Note over S: {text}"
            events.append((m.at, 0, [arrow]))
        for d in [*h.deliveries, *h.payment_events]:
            events.append((d.created_at, 1, _delivery_arrows(d)))
        events.sort(key=lambda e: (e[0], e[1]))
        for _, _, arrows in events:
            lines.extend(arrows)
    return "\n".join(lines) + "\n"


def _delivery_arrows(d: Delivery) -> list[str]:
    if d.kind == "payment":
        to = "H"
    elif d.kind == "notify":
        to = _LIFELINE.get(d.to.split(" ", 1)[0], "S")
    else:
        return [f"    Note over S: {d.what} ({d.outcome})"]
    tries = f", {d.attempts} failed attempt(s)" if d.attempts else ""
    error = f"<br/>last error: {_text(d.last_error)}" if d.last_error else ""
    arrow = "->>" if d.outcome == "delivered" else "-x"
    when = _time(d.delivered_at or d.dead_at)
    return [f"    S{arrow}{to}: {d.what} ({d.outcome} {when}{tries}){error}"]


def _text(s: str | None) -> str:
    """Mermaid-safe: no ``;`` or ``#`` (statement and entity syntax)."""
    return (s or "").replace(";", ",").replace("#", "")
