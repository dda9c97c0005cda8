"""A rolling cutover: after the migration the old Node service keeps running on
the same PostgreSQL tables (its own statements, verbatim from the seed, on a
host with ``numeric(12,2)`` money and local ``timestamp`` columns in
``Asia/Jakarta``) while the library runs beside it.  The old service's request
gets the deadline its own timer has, and the library resolves it at that
deadline like its own; what the old service resolved itself, the library
leaves alone."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest

from extension_fsm.adapters.clock import VirtualClock
from extension_fsm.adapters.sqlalchemy import SqlAlchemyStore
from extension_fsm.errors import ExtensionError
from extension_fsm.model import (
    ExtensionStatus,
    Participant,
    PaymentStatus,
    SessionStatus,
    TimeoutAction,
    TimeoutReason,
)
from extension_fsm.simulator import World
from tests.integration.seed_tables import (
    HOST_ZONE,
    M_ON,
    C,
    S,
    alembic,
    build_seed_database,
    cut_over,
    host_typed_ddl,
    seed_id,
    set_server_zone,
)
from tests.integration.sql_support import private_postgres_database

# The old service's statements, as extension.service.js runs them ($n for its
# tagged-template parameters).
NODE_INSERT = (
    "INSERT INTO session_extensions (session_id, requested_duration_minutes, requested_price,"
    " status, payment_session_id)"
    " VALUES (%s, %s, %s, %s, %s)"
    " RETURNING id, session_id, requested_duration_minutes, requested_price, status,"
    " requested_at, payment_session_id"
)
NODE_PAUSE = "UPDATE chat_sessions SET status = %s WHERE id = %s"
NODE_FINALIZE = (
    "UPDATE session_extensions SET status = %s, responded_at = NOW()"
    " WHERE id = %s AND session_id = %s AND status = %s"
    " RETURNING id, session_id, requested_duration_minutes, requested_price, status,"
    " payment_session_id"
)
NODE_LEDGER = (
    "INSERT INTO customer_transactions (customer_id, session_id, type, amount)"
    " SELECT customer_id, id, %s, %s FROM chat_sessions WHERE id = %s"
)
NODE_STILL_PENDING = "SELECT id FROM session_extensions WHERE id = %s AND status = %s"
NODE_TIMEOUT = (
    "UPDATE session_extensions SET status = %s, responded_at = NOW()"
    " WHERE id = %s AND status = %s RETURNING id, payment_session_id"
)


@pytest.fixture
def host_url(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with private_postgres_database("rolling") as url:
        set_server_zone(url)
        build_seed_database(url, host_typed_ddl())
        cut_over(url, monkeypatch, timeout="10")
        yield url


def _node(url: str, *statements: tuple[str, tuple[Any, ...]]) -> list[list[tuple[Any, ...]]]:
    """The old service's statements, each committed (``sql`` autocommits)."""
    out = []
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        for sql, params in statements:
            cur = conn.execute(sql, params)
            out.append(cur.fetchall() if cur.description else [])
    return out


def _fresh_payment(url: str, name: str) -> str:
    pid = seed_id(name)
    _node(
        url,
        (
            "INSERT INTO payment_sessions (id, customer_id, status, amount, is_extension,"
            " is_first_session_discount) VALUES (%s, %s, 'confirmed', 9000.00, true, false)",
            (pid, C),
        ),
    )
    return pid


def _node_request(url: str, session_id: str, payment_id: str) -> tuple[Any, ...]:
    """requestExtension's two writes; the INSERT's RETURNING row."""
    inserted, _ = _node(
        url,
        (NODE_INSERT, (session_id, 15, 9000, "pending", payment_id)),
        (NODE_PAUSE, ("extending", session_id)),
    )
    return inserted[0]


async def _world(url: str, at: datetime, action: TimeoutAction) -> World:
    store = await SqlAlchemyStore.open(url, layout="seed", clock="local")
    world = World(store, clock=VirtualClock(at), sweep_interval=None, use_timers=False)
    world.config.timeout_action = action
    world.sockets.connected[(Participant.MITRA, M_ON)] = True
    world.presence.online[M_ON] = True
    return world


@pytest.mark.parametrize("action", list(TimeoutAction))
def test_rolling_cutover_old_service_request_is_resolved_at_its_deadline(
    host_url: str, action: TimeoutAction
) -> None:
    pay = _fresh_payment(host_url, "payment-rolling")
    sid = S["accepted"]
    row = _node_request(host_url, sid, pay)
    xid = str(row[0])
    assert row[1:5] == (row[1], 15, Decimal("9000.00"), "pending")
    # the trigger gave it the old service's deadline and announced timeout
    ((deadline_s, timeout_s),) = _node(
        host_url,
        (
            "SELECT extract(epoch FROM expires_at - requested_at::timestamptz), timeout_seconds"
            " FROM session_extensions WHERE id = %s",
            (xid,),
        ),
    )[0]
    assert (float(deadline_s), timeout_s) == (10.0, 10)
    ((local_before,),) = _node(
        host_url, ("SELECT expires_at::text FROM chat_sessions WHERE id = %s", (sid,))
    )[0]

    async def run() -> tuple[Any, Any, Any, list[Any], datetime]:
        # the library's clock at the request, as the library reads it
        probe = await SqlAlchemyStore.open(host_url, layout="seed")
        try:
            (ext,) = [e for e in (await probe.dump(session_ids=[sid])).extensions if e.id == xid]
        finally:
            await probe.aclose()
        assert ext.status is ExtensionStatus.PENDING
        assert ext.expires_at == ext.requested_at + timedelta(seconds=10)
        world = await _world(host_url, ext.requested_at, action)
        try:
            await world.clock.advance(9.999)
            # the seed's own rows, due since March, are resolved (stale); not ours yet
            early = await world.service.sweep_due()
            assert xid not in [e.id for e in early]
            await world.clock.advance(0.001)
            assert [e.id for e in await world.service.sweep_due()] == [xid]
            await world.settle()
            await world.service.dispatcher.dispatch_due()
            dump = await world.store.dump(session_ids=[sid], payment_ids=[pay])
            done = next(e for e in dump.extensions if e.id == xid)
            payment = next(p for p in dump.payments if p.id == pay)
            assert all(delivered for _, delivered in dump.outbox)
            ours = [e for e in world.payment_events.events if e.payment_session_id == pay]
            return done, dump.sessions[0], payment, ours, ext.expires_at
        finally:
            await world.store.aclose()

    done, session, payment, events, deadline = asyncio.run(run())
    approve = action is TimeoutAction.AUTO_APPROVE
    charges = _node(
        host_url,
        ("SELECT amount FROM customer_transactions WHERE extension_id = %s", (xid,)),
    )[0]
    ((local_after,),) = _node(
        host_url, ("SELECT expires_at::text FROM chat_sessions WHERE id = %s", (sid,))
    )[0]
    if approve:  # the mitra is connected and online, at the deadline
        assert (done.status, done.via_timeout) == (ExtensionStatus.ACCEPTED, True)
        assert (session.status, payment.status) == (SessionStatus.ACTIVE, PaymentStatus.CONSUMED)
        assert charges == [(Decimal("9000.00"),)]
        assert [(type(e).__name__, e.amount) for e in events] == [("PaymentConsumed", 9000)]
        # decided at the deadline, after the old expiry: the deadline + 15 min,
        # as an instant and as the host's local (Jakarta) time
        assert session.expires_at == deadline + timedelta(minutes=15)
        local = (deadline + timedelta(minutes=15)).astimezone(ZoneInfo(HOST_ZONE))
        assert datetime.fromisoformat(local_after) == local.replace(tzinfo=None)
        assert local_before == "2026-03-01 19:02:00.25"
    else:
        assert (done.status, done.reason) == (ExtensionStatus.TIMEOUT, TimeoutReason.TIMEOUT)
        assert (session.status, payment.status) == (SessionStatus.CLOSING, PaymentStatus.FAILED)
        assert charges == []
        assert local_after == local_before
    # The old service's own timer then fires for it: its guards find nothing to do.
    still, timed_out = _node(
        host_url,
        (NODE_STILL_PENDING, (xid, "pending")),
        (NODE_TIMEOUT, ("timeout", xid, "pending")),
    )
    assert (still, timed_out) == ([], [])


def test_rolling_cutover_old_service_resolves_its_own_and_the_library_leaves_it(
    host_url: str,
) -> None:
    pay = _fresh_payment(host_url, "payment-node-own")
    sid = S["accepted"]
    xid = str(_node_request(host_url, sid, pay)[0])
    # respondToExtension(accepted) as the old service runs it, every statement
    updated, _, _ = _node(
        host_url,
        (NODE_FINALIZE, ("accepted", xid, sid, "pending")),
        ("UPDATE chat_sessions SET status = %s WHERE id = %s", ("active", sid)),
        (NODE_LEDGER, ("extension", Decimal("9000.00"), sid)),
    )
    assert [(str(r[0]), r[4]) for r in updated] == [(xid, "accepted")]

    async def run() -> None:
        probe = await SqlAlchemyStore.open(host_url, layout="seed")
        try:
            ext = next(e for e in (await probe.dump(session_ids=[sid])).extensions if e.id == xid)
        finally:
            await probe.aclose()
        world = await _world(
            host_url, ext.expires_at + timedelta(seconds=1), TimeoutAction.AUTO_APPROVE
        )
        try:
            before = await world.store.dump(session_ids=[sid], payment_ids=[pay])
            assert xid not in [e.id for e in await world.service.sweep_due()]
            with pytest.raises(ExtensionError) as err:
                await world.service.respond_to_extension(
                    extension_id=xid, session_id=sid, mitra_id=M_ON, accepted=True
                )
            assert (err.value.code.value, err.value.status_code) == ("EXTENSION_RESOLVED", 409)
            assert await world.store.dump(session_ids=[sid], payment_ids=[pay]) == before
            # the library takes the next request on that session as usual
            fresh = _fresh_payment(host_url, "payment-after-node")
            ext2 = await world.service.request_extension(
                session_id=sid,
                customer_id=C,
                duration_minutes=15,
                price=9000,
                extension_payment_session_id=fresh,
            )
            assert ext2.status is ExtensionStatus.PENDING
        finally:
            await world.store.aclose()

    asyncio.run(run())
    ledger = _node(
        host_url,
        (
            "SELECT amount, extension_id FROM customer_transactions WHERE session_id = %s"
            " ORDER BY created_at",
            (sid,),
        ),
    )[0]
    # the old service's earlier charge and its new one; none of the library's
    assert ledger == [(Decimal("15000.00"), None), (Decimal("9000.00"), None)]


def test_rolling_cutover_the_trigger_is_what_lets_the_old_insert_through(
    host_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    alembic(host_url, monkeypatch, "downgrade", "0005")
    pay = _fresh_payment(host_url, "payment-downgraded")
    with pytest.raises(psycopg.errors.NotNullViolation):
        _node_request(host_url, S["accepted"], pay)
    alembic(host_url, monkeypatch, "upgrade", "head", extension_timeout_seconds="6.5")
    row = _node_request(host_url, S["accepted"], pay)
    ((seconds, announced),) = _node(
        host_url,
        (
            "SELECT extract(epoch FROM expires_at - requested_at::timestamptz), timeout_seconds"
            " FROM session_extensions WHERE id = %s",
            (row[0],),
        ),
    )[0]
    assert (float(seconds), announced) == (6.5, 7)  # announced as Math.round(6.5)


def test_rolling_cutover_a_fractional_price_from_the_old_service_is_set_aside_uncharged(
    host_url: str,
) -> None:
    # The old service took any price its client sent; numeric(12,2) stores 9000.50.
    pay = _fresh_payment(host_url, "payment-fraction")
    sid = S["accepted"]
    inserted, _ = _node(
        host_url,
        (NODE_INSERT, (sid, 15, Decimal("9000.50"), "pending", pay)),
        (NODE_PAUSE, ("extending", sid)),
    )
    xid = str(inserted[0][0])
    ((deadline,),) = _node(
        host_url, ("SELECT expires_at FROM session_extensions WHERE id = %s", (xid,))
    )[0]

    async def run() -> None:
        world = await _world(host_url, deadline + timedelta(seconds=1), TimeoutAction.AUTO_APPROVE)
        try:
            for _ in range(2):  # set aside, then skipped: the sweep goes on with the rest
                assert xid not in [e.id for e in await world.service.sweep_due()]
        finally:
            await world.store.aclose()

    asyncio.run(run())
    ((status, count, reason, paid),) = _node(
        host_url,
        (
            "SELECT x.status, x.set_aside_count, x.set_aside_reason, p.status"
            " FROM session_extensions x JOIN payment_sessions p ON p.id = x.payment_session_id"
            " WHERE x.id = %s",
            (xid,),
        ),
    )[0]
    assert (status, count, paid) == ("pending", 1, "confirmed")
    assert "9000.50 is not a whole number" in reason
    charges = _node(
        host_url, ("SELECT 1 FROM customer_transactions WHERE extension_id = %s", (xid,))
    )[0]
    assert charges == []
