"""The hand-written SQLAlchemy baseline: what a host writes for the accept and
the request with SQLAlchemy's async engine and no library, on the engine the
store runs on.  One transaction a call: a ``SELECT … FOR UPDATE`` of the rows
it reads, then the state statements (extension, payment, session, ledger for
an accept; session and extension for a request), compare-and-set on each
status.  No audit log, no outbox, no delivery: the state alone.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import make_url, text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

_READ_ACCEPT = text(
    "SELECT e.duration_minutes, e.price, e.payment_session_id, s.status "
    "FROM extensions e JOIN chat_sessions s ON s.id = e.session_id "
    "WHERE e.id = :ext AND e.session_id = :sid AND s.mitra_id = :mitra AND e.status = 'pending' "
    "FOR UPDATE"
)
_ACCEPT_EXTENSION = text(
    "UPDATE extensions SET status = 'accepted', responded_at = :now, via_timeout = false "
    "WHERE id = :ext AND status = 'pending'"
)
_CONSUME_PAYMENT = text(
    "UPDATE payment_sessions SET status = 'consumed' WHERE id = :pid AND status = 'confirmed'"
)
_RESUME_SESSION = text(
    "UPDATE chat_sessions SET status = 'active', closure_deadline = NULL, "
    "expires_at = GREATEST(expires_at, :now) + make_interval(mins => :minutes) "
    "WHERE id = :sid AND status = 'extending' RETURNING customer_id"
)
_LEDGER = text(
    "INSERT INTO customer_transactions (customer_id, session_id, extension_id, type, amount, "
    "created_at) VALUES (:customer, :sid, :ext, 'extension', :amount, :now)"
)
_READ_REQUEST = text(
    "SELECT s.mitra_id, p.amount FROM chat_sessions s JOIN payment_sessions p "
    "ON p.customer_id = s.customer_id WHERE s.id = :sid AND s.customer_id = :customer "
    "AND s.status IN ('active', 'closing') AND p.id = :pid AND p.status = 'confirmed' "
    "AND p.is_extension AND NOT p.is_first_session_discount FOR UPDATE OF s"
)
_PAUSE_SESSION = text(
    "UPDATE chat_sessions SET status = 'extending' WHERE id = :sid "
    "AND status IN ('active', 'closing')"
)
_INSERT_EXTENSION = text(
    "INSERT INTO extensions (id, session_id, duration_minutes, price, payment_session_id, "
    "status, requested_at, expires_at, timeout_seconds, via_timeout) VALUES "
    "(:ext, :sid, 15, :price, :pid, 'pending', :now, :deadline, 10, false)"
)


def async_url(url: str) -> URL:
    """``postgresql://…`` on the asyncpg driver (the store's own driver on PostgreSQL)."""
    return make_url(url).set(drivername="postgresql+asyncpg")


def engine_for(url: str) -> AsyncEngine:
    """An async engine as a host creates one (SQLAlchemy's default pool)."""
    return create_async_engine(async_url(url))


async def accept(engine: AsyncEngine, ext_id: str, session_id: str, mitra_id: str) -> None:
    """Accept one pending extension: the read, then the 4 state statements."""
    now = datetime.now(UTC)
    async with engine.begin() as conn:
        row = (
            await conn.execute(_READ_ACCEPT, {"ext": ext_id, "sid": session_id, "mitra": mitra_id})
        ).one_or_none()
        if row is None or row.status != "extending":
            raise RuntimeError(f"{ext_id}: not pending on an extending session")
        done = await conn.execute(_ACCEPT_EXTENSION, {"ext": ext_id, "now": now})
        if done.rowcount != 1:
            raise RuntimeError(f"{ext_id}: resolved meanwhile")
        if (await conn.execute(_CONSUME_PAYMENT, {"pid": row.payment_session_id})).rowcount != 1:
            raise RuntimeError(f"{ext_id}: payment not confirmed")
        customer = (
            await conn.execute(
                _RESUME_SESSION, {"sid": session_id, "now": now, "minutes": row.duration_minutes}
            )
        ).scalar_one()
        await conn.execute(
            _LEDGER,
            {
                "customer": customer,
                "sid": session_id,
                "ext": ext_id,
                "amount": row.price,
                "now": now,
            },
        )


async def request(
    engine: AsyncEngine, ext_id: str, session_id: str, customer_id: str, payment_id: str
) -> None:
    """Request one extension: the read, the session paused, the extension inserted."""
    now = datetime.now(UTC)
    async with engine.begin() as conn:
        row = (
            await conn.execute(
                _READ_REQUEST, {"sid": session_id, "customer": customer_id, "pid": payment_id}
            )
        ).one_or_none()
        if row is None:
            raise RuntimeError(f"{session_id}: not active, or the payment is not usable")
        if (await conn.execute(_PAUSE_SESSION, {"sid": session_id})).rowcount != 1:
            raise RuntimeError(f"{session_id}: moved meanwhile")
        await conn.execute(
            _INSERT_EXTENSION,
            {
                "ext": ext_id,
                "sid": session_id,
                "price": row.amount,
                "pid": payment_id,
                "now": now,
                "deadline": now + timedelta(seconds=10),
            },
        )
