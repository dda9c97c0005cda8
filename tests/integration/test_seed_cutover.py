"""Cutover from the Node service: its own tables, rows as it left them, migrated
by revision 0003 and then run by the library (``layout="seed"``).

The tables are built here with raw DDL, from what the seed's SQL reads and
writes (not from our metadata): ids the database generates (``RETURNING id``,
so ``uuid`` on PostgreSQL), ``session_extensions`` with
``requested_duration_minutes`` / ``requested_price`` / ``payment_session_id`` /
``requested_at DEFAULT now()`` / ``responded_at`` and no deadline, a ledger
that is ``INSERT … (customer_id, session_id, type, amount)``.  The two columns
the extension code does not show, ``chat_sessions.expires_at`` (the session
timer's deadline it extends) and ``payment_sessions.amount`` (what was paid),
are the payment and timer services' own.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.config import Config

from alembic import command
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
from extension_fsm.simulation import World
from tests.integration.sql_support import private_postgres_database

ROOT = Path(__file__).resolve().parents[2]
CUTOVER = datetime(2026, 3, 1, 12, 0, 0, 250_000, tzinfo=UTC)

_PG_DDL = [
    "CREATE TABLE customers (id uuid PRIMARY KEY DEFAULT gen_random_uuid(),"
    " display_name text NOT NULL)",
    "CREATE TABLE chat_sessions (id uuid PRIMARY KEY DEFAULT gen_random_uuid(),"
    " customer_id uuid NOT NULL REFERENCES customers(id), mitra_id uuid NOT NULL,"
    " status varchar(32) NOT NULL, topic_sensitivity varchar(32),"
    " expires_at timestamptz NOT NULL)",
    "CREATE TABLE payment_sessions (id uuid PRIMARY KEY DEFAULT gen_random_uuid(),"
    " customer_id uuid NOT NULL REFERENCES customers(id), status varchar(32) NOT NULL,"
    " amount integer NOT NULL, is_extension boolean NOT NULL DEFAULT false,"
    " is_first_session_discount boolean NOT NULL DEFAULT false)",
    "CREATE TABLE customer_transactions (id uuid PRIMARY KEY DEFAULT gen_random_uuid(),"
    " customer_id uuid NOT NULL, session_id uuid NOT NULL, type varchar(32) NOT NULL,"
    " amount integer NOT NULL, created_at timestamptz NOT NULL DEFAULT now())",
    "CREATE TABLE session_extensions (id uuid PRIMARY KEY DEFAULT gen_random_uuid(),"
    " session_id uuid NOT NULL REFERENCES chat_sessions(id),"
    " requested_duration_minutes integer NOT NULL, requested_price integer NOT NULL,"
    " status varchar(32) NOT NULL DEFAULT 'pending',"
    " requested_at timestamptz NOT NULL DEFAULT now(), responded_at timestamptz,"
    " payment_session_id uuid REFERENCES payment_sessions(id))",
    "CREATE INDEX session_extensions_session_id_idx ON session_extensions (session_id)",
]
_SQLITE_DDL = [
    "CREATE TABLE customers (id TEXT PRIMARY KEY, display_name TEXT NOT NULL)",
    "CREATE TABLE chat_sessions (id TEXT PRIMARY KEY,"
    " customer_id TEXT NOT NULL REFERENCES customers(id), mitra_id TEXT NOT NULL,"
    " status TEXT NOT NULL, topic_sensitivity TEXT, expires_at TIMESTAMP NOT NULL)",
    "CREATE TABLE payment_sessions (id TEXT PRIMARY KEY,"
    " customer_id TEXT NOT NULL REFERENCES customers(id), status TEXT NOT NULL,"
    " amount INTEGER NOT NULL, is_extension BOOLEAN NOT NULL DEFAULT 0,"
    " is_first_session_discount BOOLEAN NOT NULL DEFAULT 0)",
    "CREATE TABLE customer_transactions (id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " customer_id TEXT NOT NULL, session_id TEXT NOT NULL, type TEXT NOT NULL,"
    " amount INTEGER NOT NULL, created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP)",
    "CREATE TABLE session_extensions (id TEXT PRIMARY KEY,"
    " session_id TEXT NOT NULL REFERENCES chat_sessions(id),"
    " requested_duration_minutes INTEGER NOT NULL, requested_price INTEGER NOT NULL,"
    " status TEXT NOT NULL DEFAULT 'pending',"
    " requested_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, responded_at TIMESTAMP,"
    " payment_session_id TEXT REFERENCES payment_sessions(id))",
    "CREATE INDEX session_extensions_session_id_idx ON session_extensions (session_id)",
]


def _id(name: str) -> str:
    """A stable uuid per name: the seed's ids are the database's uuids."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"seed-cutover/{name}"))


C, M_ON, M_OFF = _id("customer"), _id("mitra-online"), _id("mitra-offline")
S = {k: _id(f"session-{k}") for k in ("due", "later", "accepted", "rejected", "timeout", "free")}
# "free": a request from before payment sessions were required (the seed's
# ``if (extension.payment_session_id)``): no payment behind it.
P = {k: _id(f"payment-{k}") for k in S if k != "free"}
E = {k: _id(f"extension-{k}") for k in S}
SESSION_EXPIRY = CUTOVER + timedelta(minutes=2)


def _seed_rows() -> dict[str, list[dict[str, Any]]]:
    """What the seed left: two pending (one long due, one due 6 s after cutover),
    one accepted with its ledger row, one rejected, one timed out."""

    def ago(seconds: float) -> datetime:
        return CUTOVER - timedelta(seconds=seconds)

    sessions = {
        "due": ("extending", M_ON),
        "later": ("extending", M_OFF),
        "accepted": ("active", M_ON),
        "rejected": ("closing", M_ON),
        "timeout": ("closing", M_OFF),
        "free": ("extending", M_ON),
    }
    payments = {
        "due": "confirmed",
        "later": "confirmed",
        "accepted": "consumed",
        "rejected": "failed",
        "timeout": "failed",
    }
    extensions = {  # status, requested (seconds before cutover), responded
        "due": ("pending", 30, None),
        "later": ("pending", 4, None),
        "accepted": ("accepted", 600, 595),
        "rejected": ("rejected", 500, 497),
        "timeout": ("timeout", 400, 390),
        "free": ("pending", 60, None),
    }
    return {
        "customers": [{"id": C, "display_name": "Rina"}],
        "chat_sessions": [
            {
                "id": S[k],
                "customer_id": C,
                "mitra_id": mitra,
                "status": status,
                "topic_sensitivity": None,
                "expires_at": SESSION_EXPIRY,
            }
            for k, (status, mitra) in sessions.items()
        ],
        "payment_sessions": [
            {
                "id": P[k],
                "customer_id": C,
                "status": status,
                "amount": 15000,
                "is_extension": True,
                "is_first_session_discount": False,
            }
            for k, status in payments.items()
        ],
        "customer_transactions": [
            {
                "customer_id": C,
                "session_id": S["accepted"],
                "type": "extension",
                "amount": 15000,
                "created_at": ago(595),
            }
        ],
        "session_extensions": [
            {
                "id": E[k],
                "session_id": S[k],
                "requested_duration_minutes": 15,
                "requested_price": 15000,
                "status": status,
                "requested_at": ago(requested),
                "responded_at": None if responded is None else ago(responded),
                "payment_session_id": P.get(k),
            }
            for k, (status, requested, responded) in extensions.items()
        ],
    }


def _sync_url(url: str) -> str:
    return url.replace("postgresql://", "postgresql+psycopg://", 1)


def _sqlite_value(value: Any) -> Any:
    # As a naive UTC text, the way timestamps sit in a SQLite file.
    if isinstance(value, datetime):
        return value.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ")
    return value


def build_seed_database(url: str) -> None:
    """The seed's tables and rows, written with plain SQL."""
    engine = sa.create_engine(_sync_url(url))
    sqlite = engine.dialect.name == "sqlite"
    try:
        with engine.begin() as conn:
            for ddl in _SQLITE_DDL if sqlite else _PG_DDL:
                conn.execute(sa.text(ddl))
            for table, rows in _seed_rows().items():
                columns = list(rows[0])
                sql = (
                    f"INSERT INTO {table} ({', '.join(columns)}) "
                    f"VALUES ({', '.join(':' + c for c in columns)})"
                )
                if sqlite:
                    rows = [{k: _sqlite_value(v) for k, v in r.items()} for r in rows]
                conn.execute(sa.text(sql), rows)
    finally:
        engine.dispose()


class _XArgs:
    def __init__(self, x: list[str]) -> None:
        self.x = x


def alembic(url: str, monkeypatch: pytest.MonkeyPatch, *args: str, **x: str) -> None:
    monkeypatch.setenv("EXTENSION_FSM_DATABASE_URL", url)
    opts = _XArgs([f"{k}={v}" for k, v in {"layout": "seed", **x}.items()])
    cfg = Config(str(ROOT / "alembic.ini"), cmd_opts=opts)
    getattr(command, args[0])(cfg, *args[1:])


def cut_over(url: str, monkeypatch: pytest.MonkeyPatch, timeout: str = "10") -> None:
    """What a host runs: stamp the base the seed's tables stand for, then upgrade."""
    alembic(url, monkeypatch, "stamp", "0001")
    alembic(url, monkeypatch, "upgrade", "head", extension_timeout_seconds=timeout)


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
    store = await SqlAlchemyStore.open(url, layout="seed")
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
    engine = sa.create_engine(_sync_url(seed_url))
    second = _id("extension-second")
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
    columns = _columns(seed_url, "session_extensions")
    assert "expires_at" not in columns  # nothing half done


def _columns(url: str, table: str) -> set[str]:
    engine = sa.create_engine(_sync_url(url))
    try:
        return {c["name"] for c in sa.inspect(engine).get_columns(table)}
    finally:
        engine.dispose()


def test_seed_cutover_schema_has_every_column_the_seed_layout_uses(
    seed_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cut_over(seed_url, monkeypatch)
    for table in build_tables(layout="seed").metadata.sorted_tables:
        assert {c.name for c in table.columns} <= _columns(seed_url, table.name), table.name
    alembic(seed_url, monkeypatch, "downgrade", "0001")
    assert _columns(seed_url, "session_extensions") == {
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
    fresh = _id("payment-fresh")
    engine = sa.create_engine(_sync_url(seed_url))
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
    engine = sa.create_engine(_sync_url(seed_url))
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
