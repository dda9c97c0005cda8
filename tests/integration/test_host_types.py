"""A host's own column types: the Node service's tables in PostgreSQL with money
as ``numeric(12,2)`` and times as ``timestamp`` without time zone, on a server
whose zone is ``Asia/Jakarta``; migrated, then run by the library (SQLAlchemy's
async engine on asyncpg, its one PostgreSQL path).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa

from extension_fsm.adapters.clock import VirtualClock
from extension_fsm.adapters.sqlalchemy import SqlAlchemyStore
from extension_fsm.model import (
    ExtensionStatus,
    Participant,
    PaymentConsumed,
    PaymentStatus,
    SessionStatus,
    TimeoutAction,
)
from extension_fsm.simulator import World
from tests.integration.seed_tables import (
    CUTOVER,
    M_ON,
    SESSION_EXPIRY,
    C,
    E,
    P,
    S,
    build_seed_database,
    cut_over,
    host_typed_ddl,
    seed_id,
    set_server_zone,
    sync_url,
)
from tests.integration.sql_support import private_postgres_database

#: SESSION_EXPIRY (12:02:00.25 UTC) as the host's local column holds it
LOCAL_EXPIRY = "2026-03-01 19:02:00.25"


@pytest.fixture
def host_url() -> Iterator[str]:
    with private_postgres_database("hosttypes") as url:
        set_server_zone(url)
        build_seed_database(url, host_typed_ddl())
        yield url


def _sql(url: str, statement: str, **params: Any) -> list[Any]:
    engine = sa.create_engine(sync_url(url))
    try:
        with engine.begin() as conn:
            result = conn.execute(sa.text(statement), params)
            return list(result.all()) if result.returns_rows else []
    finally:
        engine.dispose()


async def _world(url: str) -> World:
    store = await SqlAlchemyStore.open(url, layout="seed", clock="local")
    world = World(store, clock=VirtualClock(CUTOVER), sweep_interval=None, use_timers=False)
    world.config.timeout_action = TimeoutAction.AUTO_APPROVE
    world.sockets.connected[(Participant.MITRA, M_ON)] = True
    world.presence.online[M_ON] = True
    return world


def _local_expiry(url: str, session_id: str) -> str:
    return str(
        _sql(url, "SELECT expires_at::text FROM chat_sessions WHERE id = :s", s=session_id)[0][0]
    )


def test_host_types_tables_are_what_the_host_has(host_url: str) -> None:
    # The fixture itself, checked: local timestamps in Jakarta, numeric money.
    types = dict(
        _sql(
            host_url,
            "SELECT table_name || '.' || column_name, data_type FROM information_schema.columns"
            " WHERE column_name IN ('expires_at', 'amount', 'requested_price')",
        )
    )
    assert types == {
        "chat_sessions.expires_at": "timestamp without time zone",
        "payment_sessions.amount": "numeric",
        "customer_transactions.amount": "numeric",
        "session_extensions.requested_price": "numeric",
    }
    assert _local_expiry(host_url, S["accepted"]) == LOCAL_EXPIRY
    assert _sql(host_url, "SHOW timezone") == [("Asia/Jakarta",)]


@pytest.mark.parametrize("accepted", [True, False], ids=["accept", "reject"])
def test_host_types_answer_moves_local_expiry_by_the_duration_only(
    host_url: str, monkeypatch: pytest.MonkeyPatch, accepted: bool
) -> None:
    cut_over(host_url, monkeypatch)
    fresh = seed_id("payment-fresh")
    _sql(
        host_url,
        "INSERT INTO payment_sessions (id, customer_id, status, amount, is_extension,"
        " is_first_session_discount) VALUES (:id, :c, 'confirmed', 9000.00, true, false)",
        id=fresh,
        c=C,
    )

    async def run() -> list[Any]:
        world = await _world(host_url)
        try:
            ext = await world.service.request_extension(
                session_id=S["accepted"],
                customer_id=C,
                duration_minutes=15,
                price=9000,
                extension_payment_session_id=fresh,
            )
            # the request wrote the session's status, not its expiry
            assert _local_expiry(host_url, S["accepted"]) == LOCAL_EXPIRY
            await world.clock.advance(3)
            done = await world.service.respond_to_extension(
                extension_id=ext.id, session_id=S["accepted"], mitra_id=M_ON, accepted=accepted
            )
            assert done.status is (
                ExtensionStatus.ACCEPTED if accepted else ExtensionStatus.REJECTED
            )
            await world.settle()
            await world.service.dispatcher.dispatch_due()
            dump = await world.store.dump(session_ids=[S["accepted"]], payment_ids=[fresh])
            session = dump.sessions[0]
            want = SESSION_EXPIRY + timedelta(minutes=15) if accepted else SESSION_EXPIRY
            assert session.expires_at == want  # the instant, read back exactly
            assert session.status is (SessionStatus.ACTIVE if accepted else SessionStatus.CLOSING)
            payment = next(p for p in dump.payments if p.id == fresh)
            assert payment.amount == 9000 and type(payment.amount) is int
            want_pay = PaymentStatus.CONSUMED if accepted else PaymentStatus.FAILED
            assert payment.status is want_pay
            # every outbox row, payment event included, went out
            assert dump.outbox and all(delivered for _, delivered in dump.outbox)
            return list(world.payment_events.events)
        finally:
            await world.store.aclose()

    events = asyncio.run(run())
    # +15 min in the host's own local column, not +7 h 15 min; a reject moves nothing
    local = "2026-03-01 19:17:00.25" if accepted else LOCAL_EXPIRY
    assert _local_expiry(host_url, S["accepted"]) == local
    assert len(events) == 1 and events[0].amount == 9000 and type(events[0].amount) is int
    assert isinstance(events[0], PaymentConsumed) is accepted
    payloads = _sql(
        host_url,
        "SELECT payload::text FROM extension_outbox WHERE kind = 'payment'",
    )
    assert len(payloads) == 1 and '"amount": 9000' in payloads[0][0].replace('":9000', '": 9000')
    ledger = _sql(
        host_url, "SELECT amount FROM customer_transactions WHERE session_id = :s", s=S["accepted"]
    )
    # the old service's charge, and the library's if it accepted: exact numerics
    want = [Decimal("15000.00"), Decimal("9000.00")] if accepted else [Decimal("15000.00")]
    assert sorted(r[0] for r in ledger) == sorted(want)
    # the library's stamps, in the host's local columns, are local times too
    responded = _sql(
        host_url,
        "SELECT requested_at::text, responded_at::text FROM session_extensions"
        " WHERE payment_session_id = :p",
        p=fresh,
    )
    assert responded == [("2026-03-01 19:00:00.25", "2026-03-01 19:00:03.25")]


def test_host_types_sweep_resolves_the_old_service_rows(
    host_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The old service's pending requests: numeric prices, local requested_at.
    cut_over(host_url, monkeypatch)

    async def run() -> list[Any]:
        world = await _world(host_url)
        try:
            pending = {e.id: e for e in (await world.store.dump(session_ids=[S["due"]])).extensions}
            due = pending[E["due"]]
            assert due.requested_at == CUTOVER - timedelta(seconds=30)
            assert due.expires_at == due.requested_at + timedelta(seconds=10)
            assert due.price == 15000 and type(due.price) is int
            resolved = await world.service.sweep_due()
            assert E["due"] in [e.id for e in resolved]
            await world.settle()
            await world.service.dispatcher.dispatch_due()
            dump = await world.store.dump(session_ids=[S["due"]])
            assert all(delivered for _, delivered in dump.outbox)
            ext = next(e for e in dump.extensions if e.id == E["due"])
            assert (ext.status, ext.via_timeout) == (ExtensionStatus.ACCEPTED, True)
            return list(world.payment_events.events)
        finally:
            await world.store.aclose()

    events = asyncio.run(run())
    consumed = [e for e in events if e.payment_session_id == P["due"]]
    assert [(type(e).__name__, e.amount) for e in consumed] == [("PaymentConsumed", 15000)]
    assert _local_expiry(host_url, S["due"]) == "2026-03-01 19:17:00.25"
    ledger = _sql(
        host_url,
        "SELECT amount, extension_id FROM customer_transactions WHERE session_id = :s",
        s=S["due"],
    )
    assert ledger == [(Decimal("15000.00"), E["due"])]


def test_host_types_database_clock_stamps_local_columns_consistently(
    host_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The store's default on PostgreSQL: the database's now() judges and stamps.
    cut_over(host_url, monkeypatch)
    fresh = seed_id("payment-dbclock")
    _sql(
        host_url,
        "INSERT INTO payment_sessions (id, customer_id, status, amount, is_extension,"
        " is_first_session_discount) VALUES (:id, :c, 'confirmed', 9000.00, true, false)",
        id=fresh,
        c=C,
    )

    async def run() -> str:
        store = await SqlAlchemyStore.open(host_url, layout="seed")
        world = World(store, sweep_interval=None, use_timers=False)
        world.sockets.connected[(Participant.MITRA, M_ON)] = True
        world.presence.online[M_ON] = True
        try:
            assert store.uses_database_clock
            ext = await world.service.request_extension(
                session_id=S["accepted"],
                customer_id=C,
                duration_minutes=15,
                price=9000,
                extension_payment_session_id=fresh,
            )
            await world.service.respond_to_extension(
                extension_id=ext.id, session_id=S["accepted"], mitra_id=M_ON, accepted=True
            )
            return ext.id
        finally:
            await world.store.aclose()

    xid = asyncio.run(run())
    # The old expiry (March) is long past: the session now runs 15 min from the
    # answer, both stamped in the host's local columns, in the same zone.
    ((gap, drift),) = _sql(
        host_url,
        "SELECT s.expires_at - x.responded_at,"
        " abs(extract(epoch FROM x.responded_at - localtimestamp))"
        " FROM chat_sessions s JOIN session_extensions x ON x.session_id = s.id"
        " WHERE x.id = :x",
        x=xid,
    )
    assert gap == timedelta(minutes=15)
    assert drift < 3600  # local now, not UTC now seven hours away
