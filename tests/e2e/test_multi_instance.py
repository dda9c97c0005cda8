"""Two instances of the example (uvicorn processes A and B) sharing one
PostgreSQL database and one Redis: the customer's socket on A, the mitra's on B.

- a request on A reaches the mitra on B by socket, the mitra's accept on B
  reaches the customer on A (over the Redis bridge);
- push tokens registered on one instance are used by the other (Redis);
- the mitra's presence lapsing on B (no heartbeat, socket still open) trips the
  safeguard of a timeout resolved by A: nothing charged;
- SIGKILL of A mid-flight: B's sweep resolves A's pending extensions and every
  committed outbox row is delivered, each dedupe key at least once and
  repeated only for rows A had in flight;
- a Redis partition of B (refused or blackholed, then healed): nothing
  approved without presence, nothing lost, every message delivered or pushed;
- a socket whose token expires while open is closed with 4401.

Every wait is bounded (a hang guard, never a speed check).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from examples.fastapi_app.auth import mint_token
from extension_fsm import ExtensionStatus, Participant, PaymentStatus
from extension_fsm.adapters.sqlalchemy import SqlAlchemyStore
from extension_fsm.ports import StoreDump
from tests.e2e.instances import Instance, next_frame, open_socket, seed_party_in, start_instance
from tests.e2e.parties import SECRET, Party, auth
from tests.fakes.fcm_server import FakeFcm
from tests.fakes.redis_env import connect, new_prefix, redis_url, wipe
from tests.fakes.waiting import eventually
from tests.integration.sql_support import private_postgres_database

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.timeout(900)]

CUSTOMER, MITRA = Participant.CUSTOMER, Participant.MITRA
#: the HTTP client's guard against a hang (not a measured speed)
HANG = 60.0
#: bounds of the waits for deliveries and deadlines (hang guards)
SETTLE = 300.0


# ------------------------------------------------------------------ set-up


def _require_redis() -> None:
    async def check() -> None:
        client = await connect()  # skips, or fails under CI, when Redis is absent
        await client.aclose()

    asyncio.run(check())


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    """A private PostgreSQL database for this module, its schema created once."""
    _require_redis()
    with private_postgres_database("multi") as url:

        async def create() -> None:
            store = await SqlAlchemyStore.open(url, create_schema=True)
            await store.aclose()

        asyncio.run(create())
        yield url


@dataclass
class Pair:
    a: Instance
    b: Instance
    prefix: str
    started: list[Instance] = field(default_factory=list)

    def close(self) -> None:
        """Stop both processes and their proxies (the caller wipes the prefix)."""
        try:
            self.a.close()
        finally:
            self.b.close()


def _wipe_prefix(prefix: str) -> None:
    async def run() -> None:
        client = await connect()
        try:
            await wipe(client, prefix)
        finally:
            await client.aclose()

    asyncio.run(run())


#: settings of both instances unless a test says otherwise
COMMON = {
    "timeout_seconds": "10",
    "sweep_interval": "0.2",
    "presence_ttl": "4",
    "socket_ttl": "30",
    "token_check_seconds": "1",
}


def start_pair(
    database: str,
    fcm: FakeFcm,
    creds: Path,
    log_dir: Path,
    a: dict[str, str],
    b: dict[str, str],
) -> Pair:
    prefix = new_prefix()
    common = {
        "database_url": database,
        "redis_url": redis_url(),
        "prefix": prefix,
        "fcm_credentials": creds,
        "fcm_endpoint": fcm.url,
        "log_dir": log_dir,
    }
    first = start_instance("A", **common, **{**COMMON, **a})  # type: ignore[arg-type]
    try:
        second = start_instance("B", **common, **{**COMMON, **b})  # type: ignore[arg-type]
    except BaseException:
        first.close()  # the few keys A wrote under its unique prefix expire or stay unread
        raise
    return Pair(first, second, prefix)


@pytest.fixture(scope="module")
def pair(
    database: str, fcm: FakeFcm, creds: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Pair]:
    """A sweeps; B does not (so a timeout here is resolved by A), B delivers."""
    p = start_pair(database, fcm, creds, tmp_path_factory.mktemp("logs"), {}, {"sweep": "false"})
    try:
        yield p
    finally:
        p.close()
        _wipe_prefix(p.prefix)


@dataclass
class OwnDatabase:
    url: str
    store: SqlAlchemyStore


@pytest.fixture
async def own_db(redis: Redis) -> AsyncIterator[OwnDatabase]:
    """A private database for one pair: instances sharing a database all
    dispatch its outbox, so another pair's (other Redis prefix, other sockets)
    would deliver this pair's rows."""
    with private_postgres_database("multi_own") as url:
        store = await SqlAlchemyStore.open(url, create_schema=True)
        try:
            yield OwnDatabase(url, store)
        finally:
            await store.aclose()


@pytest.fixture
async def store(database: str) -> AsyncIterator[SqlAlchemyStore]:
    s = await SqlAlchemyStore.open(database)
    try:
        yield s
    finally:
        await s.aclose()


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    client = await connect()
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=HANG) as client:
        yield client


# ----------------------------------------------------------------- helpers


async def registered(redis: Redis, prefix: str, party: Party, role: Participant) -> None:
    """Wait until some instance announced the party's ``role`` socket in Redis."""
    key = f"{prefix}sock:s:{party.session_id}:{role.value}"

    async def announced() -> bool:
        return bool(await redis.zrangebyscore(key, time.time(), "+inf"))

    await eventually(announced, within=30)


async def request(http: httpx.AsyncClient, instance: Instance, party: Party) -> str:
    r = await http.post(
        f"{instance.url}/chat/{party.session_id}/extensions",
        json={
            "duration_minutes": 30,
            "price": 25000,
            "extension_payment_session_id": party.payment_id,
        },
        headers=auth(party.customer),
    )
    assert r.status_code == 201, r.text
    ext_id: str = r.json()["id"]
    return ext_id


async def answer(
    http: httpx.AsyncClient, instance: Instance, party: Party, ext_id: str, accepted: bool
) -> httpx.Response:
    return await http.post(
        f"{instance.url}/chat/{party.session_id}/extensions/{ext_id}/respond",
        json={"accepted": accepted},
        headers=auth(party.mitra),
    )


async def frames_until(ws: ClientConnection, types: set[str]) -> list[dict[str, Any]]:
    """Frames until every one of ``types`` was seen (bounded per frame)."""
    seen: list[dict[str, Any]] = []
    while not types <= {f["type"] for f in seen}:
        seen.append(await next_frame(ws, within=SETTLE / 2))
    return seen


def rows_of(dump: StoreDump, sessions: set[str]) -> list[tuple[Any, bool]]:
    """The outbox rows (with their delivered flag) of these sessions."""
    return [(m, done) for m, done in dump.outbox if m.payload.get("session_id") in sessions]


def notify_keys(dump: StoreDump, sessions: set[str]) -> set[str]:
    """The dedupe keys of the socket/push notifications committed for these sessions."""
    return {m.dedupe_key for m, _ in rows_of(dump, sessions) if m.kind == "notify"}


async def all_delivered(store: SqlAlchemyStore, sessions: set[str], url: str) -> StoreDump:
    """Wait until every outbox row of these sessions is delivered; the dump then."""
    latest: list[StoreDump] = []

    async def done() -> bool:
        dump = await store.dump()
        latest[:] = [dump]
        rows = rows_of(dump, sessions)
        return bool(rows) and all(delivered for _, delivered in rows)

    try:
        await eventually(done, within=SETTLE, step=0.5)
    except AssertionError:
        raise AssertionError(f"undelivered: {_undelivered(url, sessions)}") from None
    return latest[0]


def _undelivered(url: str, sessions: set[str]) -> list[tuple[Any, ...]]:
    """The undelivered rows of these sessions with their last error (diagnostics)."""
    import psycopg

    with psycopg.connect(url, connect_timeout=5) as conn:
        rows = conn.execute(
            "SELECT kind, dedupe_key, attempts, available_at, dead_at, last_error,"
            " payload->>'session_id' FROM extension_outbox WHERE delivered_at IS NULL"
        ).fetchall()
    return [row[:6] for row in rows if row[6] in sessions]


async def resolved(store: SqlAlchemyStore, ext_ids: set[str]) -> StoreDump:
    latest: list[StoreDump] = []

    async def done() -> bool:
        dump = await store.dump()
        latest[:] = [dump]
        found = [e for e in dump.extensions if e.id in ext_ids]
        return len(found) == len(ext_ids) and all(
            e.status is not ExtensionStatus.PENDING for e in found
        )

    await eventually(done, within=SETTLE, step=0.3)
    return latest[0]


class Inbox:
    """Everything one client received by socket, kept by a background reader
    (a socket that closes just ends its reader; a reconnect adds a new one)."""

    def __init__(self, who: Participant, user_id: str) -> None:
        self.who, self.user_id = who, user_id
        self.frames: list[dict[str, Any]] = []
        self.sockets: list[ClientConnection] = []
        self._readers: list[asyncio.Task[None]] = []

    def attach(self, ws: ClientConnection) -> None:
        self.sockets.append(ws)
        self._readers.append(asyncio.create_task(self._read(ws)))

    async def _read(self, ws: ClientConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for raw in ws:
                self.frames.append(json.loads(raw))

    def dedupe_keys(self) -> list[str]:
        return [str(f["dedupe_key"]) for f in self.frames]

    async def aclose(self) -> None:
        for ws in self.sockets:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 10)
        for task in self._readers:
            task.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)


def socket_keys(inboxes: list[Inbox]) -> list[str]:
    """The dedupe keys of every frame these clients received, repeats kept."""
    return [key for inbox in inboxes for key in inbox.dedupe_keys()]


def pushed_keys(fcm: FakeFcm, owners: dict[str, tuple[Participant, str]]) -> list[str]:
    """The dedupe key of each push the FCM fake received for these device
    tokens (``extension id:type:recipient``, as the socket frames carry it)."""
    keys: list[str] = []
    for sent in fcm.sends():
        message = sent.body["message"]
        owner = owners.get(message["token"])
        if owner is None:
            continue
        data = message["data"]
        keys.append(f"{data['extension_id']}:{data['type']}:{owner[0].value}")
    return keys


async def everything_arrives(
    committed: set[str],
    fcm: FakeFcm,
    owners: dict[str, tuple[Participant, str]],
    inboxes: list[Inbox],
) -> None:
    """Wait until every committed dedupe key reached its client by socket or push."""

    def missing() -> set[str]:
        return committed - set(pushed_keys(fcm, owners)) - set(socket_keys(inboxes))

    async def arrived() -> bool:
        return not missing()

    try:
        await eventually(arrived, within=SETTLE, step=0.2)
    except AssertionError:
        raise AssertionError(f"never arrived: {sorted(missing())}") from None


async def register_device(
    http: httpx.AsyncClient, instance: Instance, token: str, device: str
) -> None:
    r = await http.put(f"{instance.url}/devices/me", json={"token": device}, headers=auth(token))
    assert r.status_code == 204, r.text


# ------------------------------------------------------------------- tests


async def test_multi_instance_request_on_a_reaches_b_and_accept_on_b_reaches_a(
    pair: Pair, store: SqlAlchemyStore, redis: Redis, http: httpx.AsyncClient, database: str
) -> None:
    party = await seed_party_in(store)
    async with (
        await open_socket(pair.a, party, CUSTOMER) as customer_ws,
        await open_socket(pair.b, party, MITRA) as mitra_ws,
    ):
        await registered(redis, pair.prefix, party, CUSTOMER)
        await registered(redis, pair.prefix, party, MITRA)

        ext_id = await request(http, pair.a, party)
        to_mitra = await frames_until(mitra_ws, {"extension_request"})
        assert to_mitra[-1]["extension_id"] == ext_id
        assert to_mitra[-1]["dedupe_key"] == f"{ext_id}:extension_request:mitra"
        await frames_until(customer_ws, {"session_paused"})

        answered = await answer(http, pair.b, party, ext_id, accepted=True)
        assert answered.status_code == 200, answered.text
        assert answered.json()["status"] == "accepted"
        to_customer = await frames_until(customer_ws, {"extension_response", "session_resumed"})
        response = next(f for f in to_customer if f["type"] == "extension_response")
        assert response["accepted"] is True
        assert response["dedupe_key"] == f"{ext_id}:extension_response:customer"
        await frames_until(mitra_ws, {"session_resumed"})

    dump = await all_delivered(store, {party.session_id}, database)
    ext = next(e for e in dump.extensions if e.id == ext_id)
    assert ext.status is ExtensionStatus.ACCEPTED
    payment = next(p for p in dump.payments if p.id == party.payment_id)
    assert payment.status is PaymentStatus.CONSUMED
    assert [
        entry.extension_id for entry in dump.ledger if entry.session_id == party.session_id
    ] == [ext_id]


async def test_multi_instance_device_tokens_are_shared_and_bounded(
    pair: Pair,
    store: SqlAlchemyStore,
    redis: Redis,
    http: httpx.AsyncClient,
    fcm: FakeFcm,
    database: str,
) -> None:
    party = await seed_party_in(store)
    devices = [f"dev-{party.mitra_id}-{i}" for i in range(13)]
    for i, device in enumerate(devices[:12]):  # alternately on A and B
        await register_device(http, pair.a if i % 2 else pair.b, party.mitra, device)
    await register_device(http, pair.a, party.mitra, devices[3])  # again: now the newest
    await register_device(http, pair.b, party.mitra, devices[12])
    members = await redis.smembers(f"{pair.prefix}push:mitra:{party.mitra_id}")
    kept = {m.decode() for m in members}
    assert kept == {devices[3], *devices[4:]}  # the 10 most recent, the oldest forgotten

    # The mitra has no socket anywhere: A pushes to the tokens registered (on B too).
    ext_id = await request(http, pair.a, party)
    await all_delivered(store, {party.session_id}, database)
    owners = {d: (MITRA, party.mitra_id) for d in devices}
    pushed = [
        s.body["message"]["token"]
        for s in fcm.sends()
        if s.body["message"]["token"] in owners
        and s.body["message"]["data"]["extension_id"] == ext_id
    ]
    assert sorted(pushed) == sorted(kept)


async def test_multi_instance_presence_lapsing_on_b_trips_the_safeguard_on_a(
    pair: Pair, store: SqlAlchemyStore, redis: Redis, http: httpx.AsyncClient
) -> None:
    party = await seed_party_in(store)
    online = f"{pair.prefix}online:{party.mitra_id}"
    mitra_key = f"{pair.prefix}sock:u:mitra:{party.mitra_id}"
    async with (
        await open_socket(pair.a, party, CUSTOMER) as customer_ws,
        await open_socket(pair.b, party, MITRA) as mitra_ws,
    ):
        await registered(redis, pair.prefix, party, CUSTOMER)
        await registered(redis, pair.prefix, party, MITRA)
        await mitra_ws.send("heartbeat")

        async def is_online() -> bool:
            return bool(await redis.exists(online))

        await eventually(is_online, within=30)
        ext_id = await request(http, pair.a, party)
        await frames_until(mitra_ws, {"extension_request"})

        # No more heartbeats from the mitra's app: the flag lapses, the socket stays.
        async def lapsed() -> bool:
            return not await redis.exists(online)

        await eventually(lapsed, within=60)
        dump = await resolved(store, {ext_id})
        # Still connected on B (its registry entry is live), but not online.
        assert await redis.zrangebyscore(mitra_key, time.time(), "+inf")
        to_customer = await frames_until(customer_ws, {"extension_response"})

    ext = next(e for e in dump.extensions if e.id == ext_id)
    assert ext.status is ExtensionStatus.TIMEOUT and ext.via_timeout
    assert ext.reason is not None and ext.reason.value == "safeguard"
    response = next(f for f in to_customer if f["type"] == "extension_response")
    assert response["accepted"] is False and response["reason"] == "safeguard"
    payment = next(p for p in dump.payments if p.id == party.payment_id)
    assert payment.status is PaymentStatus.FAILED
    assert payment.failure_cause is not None
    assert payment.failure_cause.value == "extension_safeguard_tripped"
    assert [e for e in dump.ledger if e.session_id == party.session_id] == []


async def test_multi_instance_sigkill_of_a_mid_flight_loses_nothing(
    own_db: OwnDatabase,
    fcm: FakeFcm,
    creds: Path,
    tmp_path: Path,
    redis: Redis,
    http: httpx.AsyncClient,
) -> None:
    database, store = own_db.url, own_db.store  # this pair's own: no other pair's dispatcher
    # Both sweep; the answer window outlasts the set-up, so A dies with every
    # extension pending and its push deliveries hanging at the FCM fake.
    p = start_pair(database, fcm, creds, tmp_path, {"timeout_seconds": "15"}, {})
    inboxes: list[Inbox] = []
    owners: dict[str, tuple[Participant, str]] = {}
    try:
        parties = [await seed_party_in(store) for _ in range(3)]
        sessions = {party.session_id for party in parties}
        for party in parties:
            mitra_device = f"dev-{party.mitra_id}"
            customer_device = f"dev-{party.customer_id}"
            owners[mitra_device] = (MITRA, party.mitra_id)
            owners[customer_device] = (CUSTOMER, party.customer_id)
            await register_device(http, p.b, party.mitra, mitra_device)
            await register_device(http, p.b, party.customer, customer_device)
            fcm.hanging.add(mitra_device)
            inbox = Inbox(CUSTOMER, party.customer_id)
            inbox.attach(await open_socket(p.a, party, CUSTOMER))
            inboxes.append(inbox)
            await registered(redis, p.prefix, party, CUSTOMER)

        ext_ids = {await request(http, p.a, party) for party in parties}

        async def pushes_in_flight() -> bool:  # A is inside each mitra's push
            hung = {s.body["message"]["token"] for s in fcm.sends()}
            return all(f"dev-{party.mitra_id}" in hung for party in parties)

        await eventually(pushes_in_flight, within=60)
        p.a.kill()
        before = await store.dump()
        in_flight = {m.dedupe_key for m, done in rows_of(before, sessions) if not done}
        assert in_flight, "A died with nothing in flight: the test proves nothing"
        pending = [e for e in before.extensions if e.id in ext_ids]
        assert {e.status for e in pending} == {ExtensionStatus.PENDING}
        fcm.hanging.clear()
        fcm.release.set()

        # The customers' app reconnects, to B.
        for party, inbox in zip(parties, inboxes, strict=True):
            inbox.attach(await open_socket(p.b, party, CUSTOMER))

        dump = await resolved(store, ext_ids)
        dump = await all_delivered(store, sessions, database)
        # B's sweep resolved them; nobody was online: nothing charged.
        for ext in (e for e in dump.extensions if e.id in ext_ids):
            assert ext.status is ExtensionStatus.TIMEOUT, ext
        assert [e for e in dump.ledger if e.session_id in sessions] == []

        # The mitras never open a socket: of theirs, only what has a push can reach them.
        reachable = {
            key
            for key in notify_keys(dump, sessions)
            if key.endswith(":customer") or key.endswith(":extension_request:mitra")
        }
        await everything_arrives(reachable, fcm, owners, inboxes)
        received = Counter(pushed_keys(fcm, owners) + socket_keys(inboxes))
        committed = notify_keys(dump, sessions)
        assert set(received) <= committed  # nothing made up
        repeated = {key for key, n in received.items() if n > 1}
        assert repeated <= in_flight, (repeated, in_flight)  # only what A had in flight
    finally:
        for inbox in inboxes:
            await inbox.aclose()
        fcm.release.set()
        p.close()
        print(f"--- A ---\n{p.a.output()}\n--- B ---\n{p.b.output()}")  # shown on failure
        print("frames:", [(i.who.value, i.dedupe_keys()) for i in inboxes])
        print("pushed:", pushed_keys(fcm, owners))
        await wipe(redis, p.prefix)


@pytest.mark.parametrize("fault", ["refuse", "blackhole"])
async def test_multi_instance_redis_partition_of_b_then_heal(
    fault: str,
    own_db: OwnDatabase,
    fcm: FakeFcm,
    creds: Path,
    tmp_path: Path,
    redis: Redis,
    http: httpx.AsyncClient,
) -> None:
    database, store = own_db.url, own_db.store  # this pair's own: no other pair's dispatcher
    p = start_pair(database, fcm, creds, tmp_path, {}, {})
    inboxes: list[Inbox] = []
    beats: list[asyncio.Task[None]] = []
    owners: dict[str, tuple[Participant, str]] = {}
    try:
        answered_party, silent_party = [await seed_party_in(store) for _ in range(2)]
        parties = [answered_party, silent_party]
        sessions = {party.session_id for party in parties}
        for party in parties:
            for who, token, user in (
                (MITRA, party.mitra, party.mitra_id),
                (CUSTOMER, party.customer, party.customer_id),
            ):
                owners[f"dev-{user}"] = (who, user)
                await register_device(http, p.a, token, f"dev-{user}")
            customer = Inbox(CUSTOMER, party.customer_id)
            customer.attach(await open_socket(p.a, party, CUSTOMER))
            mitra = Inbox(MITRA, party.mitra_id)
            mitra_ws = await open_socket(p.b, party, MITRA)
            mitra.attach(mitra_ws)
            inboxes += [customer, mitra]
            beats.append(asyncio.create_task(_heartbeat(mitra_ws)))  # the mitra's app
            await registered(redis, p.prefix, party, CUSTOMER)
            await registered(redis, p.prefix, party, MITRA)

        getattr(p.b.redis_proxy, fault)()  # B sees no Redis
        try:
            answered_ext = await request(http, p.a, answered_party)
            silent_ext = await request(http, p.a, silent_party)
            r = await answer(http, p.b, answered_party, answered_ext, accepted=True)
            assert r.status_code == 200, r.text
            # The silent mitra's deadline passes while B is cut off: presence
            # cannot be confirmed, so nothing is approved.
            dump = await resolved(store, {silent_ext})
        finally:
            p.b.redis_proxy.recover()

        silent = next(e for e in dump.extensions if e.id == silent_ext)
        assert silent.status is ExtensionStatus.TIMEOUT, silent
        assert silent.reason is not None and silent.reason.value == "safeguard"
        dump = await all_delivered(store, sessions, database)
        accepted = next(e for e in dump.extensions if e.id == answered_ext)
        assert accepted.status is ExtensionStatus.ACCEPTED
        charged = sorted(e.extension_id for e in dump.ledger if e.session_id in sessions)
        assert charged == [answered_ext]  # only the explicit accept

        committed = notify_keys(dump, sessions)

        await everything_arrives(committed, fcm, owners, inboxes)
        received = pushed_keys(fcm, owners) + socket_keys(inboxes)
        assert set(received) <= committed
    finally:
        for task in beats:
            task.cancel()
        await asyncio.gather(*beats, return_exceptions=True)
        for inbox in inboxes:
            await inbox.aclose()
        p.close()
        print(f"--- A ---\n{p.a.output()}\n--- B ---\n{p.b.output()}")  # shown on failure
        print("frames:", [(i.who.value, i.dedupe_keys()) for i in inboxes])
        print("pushed:", pushed_keys(fcm, owners))
        await wipe(redis, p.prefix)


async def _heartbeat(ws: ClientConnection) -> None:
    with contextlib.suppress(ConnectionClosed):
        while True:
            await ws.send("heartbeat")
            await asyncio.sleep(1.0)


async def test_multi_instance_socket_closed_when_its_token_expires(
    pair: Pair, store: SqlAlchemyStore, redis: Redis
) -> None:
    party = await seed_party_in(store)
    short = mint_token(CUSTOMER, party.customer_id, SECRET, ttl=2)
    from websockets.asyncio.client import connect as ws_connect

    async with await ws_connect(
        f"{pair.a.ws_url}/ws/chat/{party.session_id}?token={short}", open_timeout=30
    ) as ws:
        await registered(redis, pair.prefix, party, CUSTOMER)
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 60)  # 2 s + the 1 s check interval, bounded
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
