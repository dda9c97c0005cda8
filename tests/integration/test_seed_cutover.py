"""Cutover from the Node service: its own tables, rows as it left them (see
``seed_tables``), migrated by revision 0002 and then run by the library
(``layout="seed"``), on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from extension_fsm.adapters.clock import VirtualClock
from extension_fsm.adapters.sqlalchemy import SqlAlchemyStore, build_tables
from extension_fsm.errors import ExtensionError
from extension_fsm.model import (
    ExtensionStatus,
    FailureCause,
    Participant,
    PaymentStatus,
    SessionStatus,
    TimeoutAction,
    TimeoutReason,
)
from extension_fsm.simulator import World
from tests.integration.seed_tables import (
    CUTOVER,
    M_OFF,
    M_ON,
    SESSION_EXPIRY,
    C,
    E,
    P,
    S,
    alembic,
    build_seed_database,
    columns_of,
    cut_over,
    seed_id,
    sync_url,
)
from tests.integration.sql_support import private_postgres_database


@pytest.fixture(params=["sqlite", "postgres"])
def seed_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'seed.db'}"
        build_seed_database(url)
        yield url
        return
    with private_postgres_database("seedcut") as url:
        build_seed_database(url)
        yield url


async def _world(url: str, action: TimeoutAction) -> World:
    store = await SqlAlchemyStore.open(url, layout="seed", clock="local")
    world = World(store, clock=VirtualClock(CUTOVER), sweep_interval=None, use_timers=False)
    world.config.timeout_action = action
    for mitra, reachable in ((M_ON, True), (M_OFF, False)):
        world.sockets.connected[(Participant.MITRA, mitra)] = reachable
        world.presence.online[mitra] = reachable
    return world


def _by_id(rows: Any) -> dict[str, Any]:
    return {r.id: r for r in rows}


@pytest.mark.parametrize("action", list(TimeoutAction))
def test_seed_cutover_resolves_in_flight_extensions_and_leaves_the_rest(
    seed_url: str, monkeypatch: pytest.MonkeyPatch, action: TimeoutAction
) -> None:
    cut_over(seed_url, monkeypatch)

    async def run() -> None:
        world = await _world(seed_url, action)
        try:
            before = await world.store.dump()
            pending = _by_id(before.extensions)
            # The deadline is the seed's: requested_at + the configured timeout.
            for k, requested in (("due", 30), ("later", 4)):
                ext = pending[E[k]]
                assert ext.status is ExtensionStatus.PENDING
                assert ext.requested_at == CUTOVER - timedelta(seconds=requested)
                assert ext.expires_at == ext.requested_at + timedelta(seconds=10)
                assert (ext.timeout_seconds, ext.duration_minutes, ext.price) == (10, 15, 15000)
            info = await world.service.pending_extension(S["later"])
            assert info is not None and info.to_json()["expires_at"] == "2026-03-01T12:00:06.250Z"

            first = await world.service.sweep_due()
            assert [e.id for e in first] == [E["free"], E["due"]]  # by deadline
            await world.clock.advance(5.999)
            assert await world.service.sweep_due() == []
            await world.clock.advance(0.001)  # exactly requested_at + 10 s
            assert [e.id for e in await world.service.sweep_due()] == [E["later"]]
            # The background deliveries hold their rows' leases: wait for them
            # first, then deliver whatever they left.
            await world.settle()
            await world.service.dispatcher.dispatch_due()
            after = await world.store.dump()
        finally:
            await world.store.aclose()

        ext, ses, pay = (_by_id(x) for x in (after.extensions, after.sessions, after.payments))
        approve = action is TimeoutAction.AUTO_APPROVE
        due = ext[E["due"]]
        if approve:  # the mitra is connected and online: approved as the seed's timer would
            assert (due.status, due.via_timeout) == (ExtensionStatus.ACCEPTED, True)
            assert pay[P["due"]].status is PaymentStatus.CONSUMED
            assert ses[S["due"]].status is SessionStatus.ACTIVE
            assert ses[S["due"]].expires_at == SESSION_EXPIRY + timedelta(minutes=15)
        else:
            assert (due.status, due.reason) == (ExtensionStatus.TIMEOUT, TimeoutReason.TIMEOUT)
            assert pay[P["due"]].status is PaymentStatus.FAILED
            assert pay[P["due"]].failure_cause is FailureCause.EXTENSION_REJECTED
            assert ses[S["due"]].status is SessionStatus.CLOSING
        # The offline mitra's extension is never approved (safeguard or policy).
        later = ext[E["later"]]
        assert later.status is ExtensionStatus.TIMEOUT
        assert later.reason is (TimeoutReason.SAFEGUARD if approve else TimeoutReason.TIMEOUT)
        assert pay[P["later"]].status is PaymentStatus.FAILED
        assert ses[S["later"]].status is SessionStatus.CLOSING
        # Nothing to charge: timed out, free of charge (the seed extended it for free).
        free = ext[E["free"]]
        assert (free.status, free.payment_session_id) == (ExtensionStatus.TIMEOUT, None)
        assert ses[S["free"]].status is SessionStatus.CLOSING
        # What the seed had resolved is untouched, row for row.
        for k in ("accepted", "rejected", "timeout"):
            assert ext[E[k]] == _by_id(before.extensions)[E[k]]
            assert ses[S[k]] == _by_id(before.sessions)[S[k]]
            assert pay[P[k]] == _by_id(before.payments)[P[k]]
        # The ledger: the seed's one row, plus one charge if the due one was approved.
        ledger = sorted(
            (
                (e.session_id, e.extension_id, e.type.value, e.amount, e.created_at)
                for e in after.ledger
            ),
            key=lambda r: r[0],
        )
        expected = [(S["accepted"], None, "extension", 15000, CUTOVER - timedelta(seconds=595))]
        if approve:
            expected.append((S["due"], E["due"], "extension", 15000, CUTOVER))
        assert ledger == sorted(expected, key=lambda r: r[0])
        assert all(delivered for _, delivered in after.outbox)

    asyncio.run(run())


def test_seed_cutover_deadline_follows_the_configured_timeout(
    seed_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cut_over(seed_url, monkeypatch, timeout="2.5")

    async def run() -> dict[str, Any]:
        store = await SqlAlchemyStore.open(seed_url, layout="seed")
        try:
            return _by_id((await store.dump()).extensions)
        finally:
            await store.aclose()

    ext = asyncio.run(run())
    for row in ext.values():
        assert row.expires_at == row.requested_at + timedelta(seconds=2.5)
        assert row.timeout_seconds == 3  # announced as Math.round(2.5)


def test_seed_cutover_refuses_rows_that_break_the_rules(
    seed_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The seed had no guard: a second pending request on the "due" session.
    engine = sa.create_engine(sync_url(seed_url))
    second = seed_id("extension-second")
    try:
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO session_extensions (id, session_id, requested_duration_minutes,"
                    " requested_price, status, payment_session_id)"
                    " VALUES (:id, :s, 15, 15000, 'pending', :p)"
                ),
                {"id": second, "s": S["due"], "p": P["later"]},
            )
    finally:
        engine.dispose()
    alembic(seed_url, monkeypatch, "stamp", "0001")
    with pytest.raises(RuntimeError) as refused:
        alembic(seed_url, monkeypatch, "upgrade", "head")
    message = str(refused.value)
    assert S["due"] in message and P["later"] in message
    columns = columns_of(seed_url, "session_extensions")
    assert "expires_at" not in columns  # nothing half done


def test_seed_cutover_schema_has_every_column_the_seed_layout_uses(
    seed_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cut_over(seed_url, monkeypatch)
    for table in build_tables(layout="seed").metadata.sorted_tables:
        assert {c.name for c in table.columns} <= columns_of(seed_url, table.name), table.name
    alembic(seed_url, monkeypatch, "downgrade", "0001")
    assert columns_of(seed_url, "session_extensions") == {
        "id",
        "session_id",
        "requested_duration_minutes",
        "requested_price",
        "status",
        "requested_at",
        "responded_at",
        "payment_session_id",
    }


def test_seed_cutover_then_new_requests_run_on_the_seed_tables(
    seed_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cut_over(seed_url, monkeypatch)
    fresh = seed_id("payment-fresh")
    engine = sa.create_engine(sync_url(seed_url))
    try:
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO payment_sessions (id, customer_id, status, amount, is_extension,"
                    " is_first_session_discount) VALUES (:id, :c, 'confirmed', 9000, true, false)"
                ),
                {"id": fresh, "c": C},
            )
    finally:
        engine.dispose()

    async def run() -> None:
        world = await _world(seed_url, TimeoutAction.AUTO_APPROVE)
        try:
            ext = await world.service.request_extension(
                session_id=S["accepted"],
                customer_id=C,
                duration_minutes=10,
                price=9000,
                extension_payment_session_id=fresh,
            )
            done = await world.service.respond_to_extension(
                extension_id=ext.id, session_id=S["accepted"], mitra_id=M_ON, accepted=True
            )
            assert done.status is ExtensionStatus.ACCEPTED
            dump = await world.store.dump()
        finally:
            await world.store.aclose()
        charges = [e for e in dump.ledger if e.extension_id == ext.id]
        assert [(e.session_id, e.amount) for e in charges] == [(S["accepted"], 9000)]

    asyncio.run(run())
    # The seed's own column names hold the new row.
    engine = sa.create_engine(sync_url(seed_url))
    try:
        with engine.connect() as conn:
            row = conn.execute(
                sa.text(
                    "SELECT requested_duration_minutes, requested_price, status"
                    " FROM session_extensions WHERE payment_session_id = :p"
                ),
                {"p": fresh},
            ).one()
    finally:
        engine.dispose()
    assert tuple(row) == (10, 9000, "accepted")


def test_seed_cutover_a_malformed_id_is_bad_input_not_a_crash(
    seed_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cut_over(seed_url, monkeypatch)
    uuid_columns = seed_url.startswith("postgresql")

    async def run() -> list[tuple[str, int]]:
        world = await _world(seed_url, TimeoutAction.AUTO_APPROVE)
        calls = [
            lambda: world.service.request_extension(
                session_id="nope",
                customer_id=C,
                duration_minutes=15,
                price=15000,
                extension_payment_session_id=P["due"],
            ),
            lambda: world.service.respond_to_extension(
                extension_id="nope", session_id=S["due"], mitra_id=M_ON, accepted=True
            ),
        ]
        try:
            before = await world.store.dump()
            refused = []
            for call in calls:
                with pytest.raises(ExtensionError) as err:
                    await call()
                refused.append((err.value.code.value, err.value.status_code))
            assert await world.store.dump() == before
            return refused
        finally:
            await world.store.aclose()

    refused = asyncio.run(run())
    if uuid_columns:  # the database refuses a non-uuid: answered as bad input
        assert refused == [("VALIDATION_ERROR", 422)] * 2
    else:  # text ids: simply not found, with the seed's codes
        assert refused == [("SESSION_NOT_ACTIVE", 409), ("EXTENSION_RESOLVED", 409)]
