"""The baselines: the straightforward raw-SQL code a competent engineer writes
for the same flow, with ``sqlite3`` and ``psycopg`` (sync), one transaction
per call, compare-and-set on every status, the same rows as the library
writes: extension, session, payment, ledger, audit log, outbox.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from .harness import check

FAR = datetime(2030, 1, 1, tzinfo=UTC)


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def accept_outbox(
    ext_id: str,
    session_id: str,
    customer: str,
    mitra: str,
    minutes: int,
    expires_at: str,
    payment: tuple[str, int, str],
) -> list[tuple[str, str, str, str]]:
    """The six outbox rows an accept writes: (id, kind, dedupe_key, payload JSON);
    ``payment``: the consumed payment's id, amount and the decision's time."""
    response = {
        "session_id": session_id,
        "recipient": "customer",
        "user_id": customer,
        "message": {
            "type": "extension_response",
            "accepted": True,
            "duration_minutes": minutes,
            "expires_at": expires_at,
            "via_timeout": False,
        },
        "dedupe_key": f"{ext_id}:extension_response:customer",
        "push": {
            "title": "Perpanjangan Diterima",
            "body": f"Sesi kamu diperpanjang +{minutes} menit",
            "data": {
                "type": "extension_response",
                "session_id": session_id,
                "extension_id": ext_id,
                "accepted": True,
                "action": "open_chat",
            },
        },
    }
    rows = [
        (
            "session_timer",
            f"{session_id}:clear_closure_grace",
            {"action": "clear_closure_grace", "session_id": session_id, "at": None},
        ),
        (
            "session_timer",
            f"{session_id}:expiry_extended:{expires_at}",
            {"action": "expiry_extended", "session_id": session_id, "at": expires_at},
        ),
        ("notify", str(response.pop("dedupe_key")), response),
    ]
    for who, user in (("customer", customer), ("mitra", mitra)):
        key = f"{ext_id}:session_resumed:{who}"
        rows.append(
            (
                "notify",
                key,
                {
                    "session_id": session_id,
                    "recipient": who,
                    "user_id": user,
                    "message": {"type": "session_resumed", "session_id": session_id},
                    "push": None,
                },
            )
        )
    payment_id, amount, at = payment
    rows.append(
        (
            "payment",
            f"{ext_id}:payment_consumed:{payment_id}",
            {
                "action": "consumed",
                "session_id": session_id,
                "extension_id": ext_id,
                "payment_session_id": payment_id,
                "customer_id": customer,
                "amount": amount,
                "duration_minutes": minutes,
                "via_timeout": False,
                "at": at,
            },
        )
    )
    return [(str(uuid.uuid4()), kind, key, json.dumps(payload)) for kind, key, payload in rows]


def request_outbox(
    ext_id: str, session_id: str, customer: str, mitra: str, minutes: int, price: int
) -> list[tuple[str, str, str, str]]:
    """The two outbox rows a request writes."""
    ask = f"{ext_id}:extension_request:mitra"
    paused = f"{ext_id}:session_paused:customer"
    rows = [
        (
            "notify",
            ask,
            {
                "session_id": session_id,
                "recipient": "mitra",
                "user_id": mitra,
                "message": {
                    "type": "extension_request",
                    "session_id": session_id,
                    "extension_id": ext_id,
                    "duration_minutes": minutes,
                    "price": price,
                    "timeout_seconds": 10,
                },
                "dedupe_key": ask,
                "push": {
                    "title": "Permintaan Perpanjang",
                    "body": f"Rina mau lanjut +{minutes} menit",
                    "data": {
                        "type": "extension_request",
                        "session_id": session_id,
                        "extension_id": ext_id,
                        "duration_minutes": minutes,
                        "price": price,
                        "timeout_seconds": 10,
                        "action": "open_extension",
                    },
                },
            },
        ),
        (
            "notify",
            paused,
            {
                "session_id": session_id,
                "recipient": "customer",
                "user_id": customer,
                "message": {
                    "type": "session_paused",
                    "session_id": session_id,
                    "reason": "extension_pending",
                },
                "dedupe_key": paused,
                "push": None,
            },
        ),
    ]
    return [(str(uuid.uuid4()), kind, key, json.dumps(payload)) for kind, key, payload in rows]


# ---------------------------------------------------------------- seeding


def seed_rows(
    prefix: str, n: int, *, pending: bool, now: datetime, deadline: datetime | None = None
) -> dict[str, list[tuple[Any, ...]]]:
    """Host rows for ``n`` sessions (and, if ``pending``, a pending extension each)."""
    deadline = deadline or now + timedelta(seconds=10)
    rows: dict[str, list[tuple[Any, ...]]] = {
        "customers": [],
        "chat_sessions": [],
        "payment_sessions": [],
        "extensions": [],
    }
    for i in range(n):
        c, s, p, e = (f"{prefix}c{i}", f"{prefix}s{i}", f"{prefix}p{i}", f"{prefix}e{i}")
        rows["customers"].append((c, "Rina"))
        rows["chat_sessions"].append(
            (
                s,
                c,
                f"{prefix}m{i}",
                "extending" if pending else "active",
                now + timedelta(minutes=30),
            )
        )
        rows["payment_sessions"].append((p, c, "confirmed", 15_000, True, False))
        if pending:
            rows["extensions"].append((e, s, 15, 15_000, p, "pending", now, deadline, 10, False))
    return rows


_INSERTS = {
    "customers": "INSERT INTO customers (id, display_name) VALUES ({})",
    "chat_sessions": "INSERT INTO chat_sessions (id, customer_id, mitra_id, status, expires_at) "
    "VALUES ({})",
    "payment_sessions": "INSERT INTO payment_sessions (id, customer_id, status, amount, "
    "is_extension, is_first_session_discount) VALUES ({})",
    "extensions": "INSERT INTO extensions (id, session_id, duration_minutes, "
    "price, payment_session_id, status, requested_at, expires_at, "
    "timeout_seconds, via_timeout) VALUES ({})",
}


def seed_sqlite(conn: sqlite3.Connection, rows: dict[str, list[tuple[Any, ...]]]) -> None:
    """Insert seed rows (untimed)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        for table, values in rows.items():
            if values:
                marks = ", ".join("?" * len(values[0]))
                conn.executemany(
                    _INSERTS[table].format(marks),
                    [
                        tuple(_iso(v) if isinstance(v, datetime) else v for v in row)
                        for row in values
                    ],
                )
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def seed_pg(conn: psycopg.Connection[Any], rows: dict[str, list[tuple[Any, ...]]]) -> None:
    """Insert seed rows with COPY (untimed)."""
    with conn.transaction(), conn.cursor() as cur:
        for table, values in rows.items():
            if not values:
                continue
            cols = _INSERTS[table].split("(", 1)[1].split(")", 1)[0]
            with cur.copy(f"COPY {table} ({cols}) FROM STDIN") as copy:
                for row in values:
                    copy.write_row(row)


# ---------------------------------------------------------------- sqlite3


def sqlite_connect(path: str) -> sqlite3.Connection:
    """A connection the way the adapter opens its file: WAL, ``synchronous=FULL``,
    transactions under our control, each one ``BEGIN IMMEDIATE``."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=10.0)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    return conn


class _Immediate:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (``ROLLBACK`` on error), as the adapter does."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self.conn.execute("ROLLBACK" if exc_type else "COMMIT")


def sqlite_accept(
    conn: sqlite3.Connection, ext_id: str, session_id: str, mitra_id: str, now: datetime
) -> str:
    """Accept one extension: every write of the library's accept, one transaction."""
    t = _iso(now)
    with _Immediate(conn):
        row = conn.execute(
            "UPDATE extensions SET status = 'accepted', responded_at = ?, "
            "via_timeout = 0 WHERE id = ? AND session_id = ? AND status = 'pending' "
            "RETURNING duration_minutes, price, payment_session_id",
            (t, ext_id, session_id),
        ).fetchone()
        if row is None:
            raise RuntimeError("extension already resolved")
        minutes, price, payment_id = row
        srow = conn.execute(
            "UPDATE chat_sessions SET status = 'active', closure_deadline = NULL, "
            "expires_at = strftime('%Y-%m-%d %H:%M:%f', max(expires_at, ?), ?) "
            "WHERE id = ? AND mitra_id = ? AND status = 'extending' "
            "RETURNING customer_id, expires_at",
            (t, f"+{minutes} minutes", session_id, mitra_id),
        ).fetchone()
        if srow is None:
            raise RuntimeError("session moved")
        customer, expires_at = srow
        if (
            conn.execute(
                "UPDATE payment_sessions SET status = 'consumed' WHERE id = ? AND "
                "status = 'confirmed'",
                (payment_id,),
            ).rowcount
            != 1
        ):
            raise RuntimeError("payment not confirmed")
        conn.execute(
            "INSERT INTO customer_transactions (customer_id, session_id, extension_id, type, "
            "amount, created_at) VALUES (?, ?, ?, 'extension', ?, ?)",
            (customer, session_id, ext_id, price, t),
        )
        conn.executemany(
            "INSERT INTO extension_transitions (entity, entity_id, from_status, to_status, "
            "event, actor, at) VALUES (?, ?, ?, ?, ?, 'mitra', ?)",
            [
                ("extension", ext_id, "pending", "accepted", "accept", t),
                ("session", session_id, "extending", "active", "resume", t),
                ("payment", payment_id, "confirmed", "consumed", "consume", t),
            ],
        )
        conn.executemany(
            "INSERT INTO extension_outbox (id, kind, dedupe_key, payload, created_at, "
            "available_at) VALUES (?, ?, ?, ?, ?, ?)",
            [
                (*r, t, t)
                for r in accept_outbox(
                    ext_id,
                    session_id,
                    customer,
                    mitra_id,
                    minutes,
                    expires_at,
                    (payment_id, price, now.isoformat()),
                )
            ],
        )
    return str(expires_at)


def sqlite_request(
    conn: sqlite3.Connection,
    ext_id: str,
    session_id: str,
    customer_id: str,
    payment_id: str,
    now: datetime,
) -> None:
    """Request one extension: the session paused, the extension inserted, one transaction."""
    t = _iso(now)
    with _Immediate(conn):
        srow = conn.execute(
            "UPDATE chat_sessions SET status = 'extending' WHERE id = ? AND customer_id = ? "
            "AND status IN ('active', 'closing') RETURNING mitra_id, status",
            (session_id, customer_id),
        ).fetchone()
        if srow is None:
            raise RuntimeError("session not active")
        prow = conn.execute(
            "SELECT amount FROM payment_sessions WHERE id = ? AND customer_id = ? AND "
            "status = 'confirmed' AND is_extension AND NOT is_first_session_discount",
            (payment_id, customer_id),
        ).fetchone()
        if prow is None:
            raise RuntimeError("payment not usable")
        conn.execute(
            "INSERT INTO extensions (id, session_id, duration_minutes, price, "
            "payment_session_id, status, requested_at, expires_at, timeout_seconds, "
            "via_timeout) VALUES (?, ?, 15, ?, ?, 'pending', ?, ?, 10, 0)",
            (ext_id, session_id, prow[0], payment_id, t, _iso(now + timedelta(seconds=10))),
        )
        conn.executemany(
            "INSERT INTO extension_transitions (entity, entity_id, from_status, to_status, "
            "event, actor, at) VALUES (?, ?, ?, ?, ?, 'customer', ?)",
            [
                ("extension", ext_id, None, "pending", "request", t),
                ("session", session_id, "active", "extending", "pause", t),
            ],
        )
        conn.executemany(
            "INSERT INTO extension_outbox (id, kind, dedupe_key, payload, created_at, "
            "available_at) VALUES (?, ?, ?, ?, ?, ?)",
            [
                (*r, t, t)
                for r in request_outbox(ext_id, session_id, customer_id, srow[0], 15, prow[0])
            ],
        )


# ---------------------------------------------------------------- psycopg


def pg_accept(
    conn: psycopg.Connection[Any],
    ext_id: str,
    session_id: str,
    mitra_id: str,
    now: datetime,
    *,
    state_only: bool = False,
) -> None:
    """Accept one extension with psycopg: one statement per table, one transaction.

    ``state_only``: the issue's literal 4 statements (extension, payment,
    session, ledger) without the audit log and outbox rows the library also writes.
    """
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(
            "UPDATE extensions SET status = 'accepted', responded_at = %s, "
            "via_timeout = false WHERE id = %s AND session_id = %s AND status = 'pending' "
            "RETURNING duration_minutes, price, payment_session_id",
            (now, ext_id, session_id),
        )
        row = cur.fetchone()
        if row is None:
            raise RuntimeError("extension already resolved")
        minutes, price, payment_id = row
        cur.execute(
            "UPDATE payment_sessions SET status = 'consumed' WHERE id = %s AND "
            "status = 'confirmed'",
            (payment_id,),
        )
        if cur.rowcount != 1:
            raise RuntimeError("payment not confirmed")
        cur.execute(
            "UPDATE chat_sessions SET status = 'active', closure_deadline = NULL, "
            "expires_at = GREATEST(expires_at, %s) + make_interval(mins => %s) "
            "WHERE id = %s AND mitra_id = %s AND status = 'extending' "
            "RETURNING customer_id, expires_at",
            (now, minutes, session_id, mitra_id),
        )
        srow = cur.fetchone()
        if srow is None:
            raise RuntimeError("session moved")
        customer, expires_at = srow
        cur.execute(
            "INSERT INTO customer_transactions (customer_id, session_id, extension_id, type, "
            "amount, created_at) VALUES (%s, %s, %s, 'extension', %s, %s)",
            (customer, session_id, ext_id, price, now),
        )
        if state_only:
            return
        cur.execute(
            "INSERT INTO extension_transitions (entity, entity_id, from_status, to_status, "
            "event, actor, at) VALUES (%s, %s, 'pending', 'accepted', 'accept', 'mitra', %s), "
            "(%s, %s, 'extending', 'active', 'resume', 'mitra', %s), "
            "(%s, %s, 'confirmed', 'consumed', 'consume', 'mitra', %s)",
            ("extension", ext_id, now, "session", session_id, now, "payment", payment_id, now),
        )
        outbox = accept_outbox(
            ext_id,
            session_id,
            customer,
            mitra_id,
            minutes,
            expires_at.isoformat(),
            (payment_id, price, now.isoformat()),
        )
        cur.execute(
            "INSERT INTO extension_outbox (id, kind, dedupe_key, payload, created_at, "
            "available_at) VALUES " + ", ".join(["(%s, %s, %s, %s, %s, %s)"] * len(outbox)),
            [v for r in outbox for v in (*r, now, now)],
        )


def pg_request(
    conn: psycopg.Connection[Any],
    ext_id: str,
    session_id: str,
    customer_id: str,
    payment_id: str,
    now: datetime,
    *,
    state_only: bool = False,
) -> None:
    """Request one extension with psycopg, one transaction (``state_only``: the
    session, the payment read and the extension, without audit and outbox rows)."""
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(
            "UPDATE chat_sessions SET status = 'extending' WHERE id = %s AND customer_id = %s "
            "AND status IN ('active', 'closing') RETURNING mitra_id",
            (session_id, customer_id),
        )
        srow = cur.fetchone()
        if srow is None:
            raise RuntimeError("session not active")
        cur.execute(
            "SELECT amount FROM payment_sessions WHERE id = %s AND customer_id = %s AND "
            "status = 'confirmed' AND is_extension AND NOT is_first_session_discount",
            (payment_id, customer_id),
        )
        prow = cur.fetchone()
        if prow is None:
            raise RuntimeError("payment not usable")
        cur.execute(
            "INSERT INTO extensions (id, session_id, duration_minutes, price, "
            "payment_session_id, status, requested_at, expires_at, timeout_seconds, via_timeout) "
            "VALUES (%s, %s, 15, %s, %s, 'pending', %s, %s, 10, false)",
            (ext_id, session_id, prow[0], payment_id, now, now + timedelta(seconds=10)),
        )
        if state_only:
            return
        cur.execute(
            "INSERT INTO extension_transitions (entity, entity_id, from_status, to_status, "
            "event, actor, at) VALUES (%s, %s, NULL, 'pending', 'request', 'customer', %s), "
            "(%s, %s, 'active', 'extending', 'pause', 'customer', %s)",
            ("extension", ext_id, now, "session", session_id, now),
        )
        outbox = request_outbox(ext_id, session_id, customer_id, srow[0], 15, prow[0])
        cur.execute(
            "INSERT INTO extension_outbox (id, kind, dedupe_key, payload, created_at, "
            "available_at) VALUES " + ", ".join(["(%s, %s, %s, %s, %s, %s)"] * len(outbox)),
            [v for r in outbox for v in (*r, now, now)],
        )


# ---------------------------------------------------------------- checks


def count(conn: Any, sql: str, params: tuple[Any, ...]) -> int:
    """``SELECT count(*)`` on either driver."""
    if isinstance(conn, sqlite3.Connection):
        return int(conn.execute(sql, params).fetchone()[0])
    return int(conn.execute(sql.replace("?", "%s"), params).fetchone()[0])


def check_accepted(conn: Any, prefix: str, n: int, *, full: bool = True) -> None:
    """Every one of the ``n`` extensions under ``prefix`` accepted, with all its rows."""
    like = (prefix + "%",)
    check(
        count(
            conn,
            "SELECT count(*) FROM extensions WHERE id LIKE ? AND status = 'accepted'",
            like,
        )
        == n,
        f"{prefix}: not all accepted",
    )
    check(
        count(
            conn, "SELECT count(*) FROM chat_sessions WHERE id LIKE ? AND status = 'active'", like
        )
        == n,
        f"{prefix}: sessions not resumed",
    )
    check(
        count(
            conn,
            "SELECT count(*) FROM payment_sessions WHERE id LIKE ? AND status = 'consumed'",
            like,
        )
        == n,
        f"{prefix}: payments not consumed",
    )
    check(
        count(conn, "SELECT count(*) FROM customer_transactions WHERE extension_id LIKE ?", like)
        == n,
        f"{prefix}: ledger rows missing",
    )
    if full:
        check(
            count(
                conn,
                "SELECT count(*) FROM extension_outbox WHERE dedupe_key LIKE ?",
                like,
            )
            == 6 * n,
            f"{prefix}: outbox rows missing (6 an accept: 3 notices, 2 timers, the payment)",
        )
        check(
            count(conn, "SELECT count(*) FROM extension_transitions WHERE entity_id LIKE ?", like)
            == 3 * n,
            f"{prefix}: audit rows missing",
        )


# ---------------------------------------------------------------- a backlog, raw

_CLAIM_DUE = (
    "WITH due AS (SELECT id FROM extensions WHERE status = 'pending' AND expires_at <= now() "
    "ORDER BY expires_at LIMIT %s FOR UPDATE SKIP LOCKED) "
    "UPDATE extensions e SET status = 'timeout', responded_at = now(), via_timeout = true, "
    "reason = 'timeout', failure_cause = 'extension_rejected' FROM due WHERE e.id = due.id "
    "RETURNING e.id, e.session_id, e.payment_session_id, e.price, e.responded_at"
)


def timeout_outbox(
    ext_id: str, session_id: str, customer: str, mitra: str, payment_id: str, amount: int, at: str
) -> list[tuple[str, str, str, str]]:
    """The five outbox rows an auto-rejecting timeout writes."""
    closes = {"type": "session_closing", "session_id": session_id}
    rows = [
        (
            "notify",
            f"{ext_id}:extension_response:customer",
            {
                "session_id": session_id,
                "recipient": "customer",
                "user_id": customer,
                "message": {"type": "extension_response", "accepted": False, "reason": "timeout"},
                "push": {
                    "title": "Perpanjangan Tidak Dijawab",
                    "body": "Mitra belum merespons permintaanmu.",
                    "data": {
                        "type": "extension_response",
                        "session_id": session_id,
                        "extension_id": ext_id,
                        "accepted": False,
                        "action": "open_chat",
                    },
                },
            },
        ),
        *(
            (
                "notify",
                f"{ext_id}:session_closing:{who}",
                {
                    "session_id": session_id,
                    "recipient": who,
                    "user_id": user,
                    "message": closes,
                    "push": None,
                },
            )
            for who, user in (("mitra", mitra), ("customer", customer))
        ),
        (
            "session_timer",
            f"{session_id}:start_closure_grace:{at}",
            {"action": "start_closure_grace", "session_id": session_id, "at": at},
        ),
        (
            "payment",
            f"{ext_id}:payment_failed:{payment_id}",
            {
                "action": "failed",
                "session_id": session_id,
                "extension_id": ext_id,
                "payment_session_id": payment_id,
                "customer_id": customer,
                "amount": amount,
                "cause": "extension_rejected",
                "at": at,
            },
        ),
    ]
    return [(str(uuid.uuid4()), kind, key, json.dumps(payload)) for kind, key, payload in rows]


def pg_timeout_batch(conn: psycopg.Connection[Any], batch: int = 100) -> list[str]:
    """Claim up to ``batch`` due extensions (``SKIP LOCKED``) and write what an
    auto-rejecting timeout writes, in one transaction: extension, session
    (closing, a minute's grace), payment failed, 3 audit rows and 5 outbox rows
    each.  Returns the ids resolved (none: the backlog is drained)."""
    with conn.transaction(), conn.cursor() as cur:
        claimed = cur.execute(_CLAIM_DUE, (batch,)).fetchall()
        if not claimed:
            return []
        sessions = {
            sid: (customer, mitra)
            for sid, customer, mitra in cur.execute(
                "UPDATE chat_sessions SET status = 'closing', "
                "closure_deadline = now() + interval '60 seconds' "
                "WHERE id = ANY(%s) AND status = 'extending' RETURNING id, customer_id, mitra_id",
                ([c[1] for c in claimed],),
            ).fetchall()
        }
        cur.execute(
            "UPDATE payment_sessions SET status = 'failed', failure_cause = 'extension_rejected' "
            "WHERE id = ANY(%s) AND status = 'confirmed'",
            ([c[2] for c in claimed],),
        )
        audit: list[tuple[Any, ...]] = []
        outbox: list[tuple[Any, ...]] = []
        for ext_id, session_id, payment_id, price, at in claimed:
            customer, mitra = sessions[session_id]
            audit += [
                ("extension", ext_id, "pending", "timeout", "time_out", "extension_rejected", at),
                ("session", session_id, "extending", "closing", "close", None, at),
                ("payment", payment_id, "confirmed", "failed", "fail", "extension_rejected", at),
            ]
            rows = timeout_outbox(
                ext_id, session_id, customer, mitra, payment_id, price, at.isoformat()
            )
            outbox += [(*r, at, at) for r in rows]
        cur.executemany(
            "INSERT INTO extension_transitions (entity, entity_id, from_status, to_status, "
            "event, cause, actor, at) VALUES (%s, %s, %s, %s, %s, %s, 'system', %s)",
            audit,
        )
        cur.executemany(
            "INSERT INTO extension_outbox (id, kind, dedupe_key, payload, created_at, "
            "available_at) VALUES (%s, %s, %s, %s, %s, %s)",
            outbox,
        )
    return [c[0] for c in claimed]
