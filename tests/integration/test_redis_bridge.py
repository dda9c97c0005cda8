"""RedisSocketBridge against the real Redis: two instances in one test, a
socket on A reached by a send from B, connected-anywhere across instances,
registry expiry after a crash, and Redis outages at the edge."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from redis.asyncio import Redis

from extension_fsm import (
    DeliveryError,
    ExtensionService,
    Participant,
    PaymentSession,
    PaymentStatus,
    Session,
    SessionStatus,
)
from extension_fsm.adapters.clock import VirtualClock
from extension_fsm.adapters.config import StaticConfig
from extension_fsm.adapters.memory import (
    MemoryPresence,
    MemoryPush,
    MemorySessionTimer,
    MemoryStore,
)
from extension_fsm.adapters.redis_bridge import RedisSocketBridge
from extension_fsm.adapters.websocket import WebSocketHub
from extension_fsm.errors import SocketUnreachable
from tests.fakes.redis_env import RedisProxy, closed_port, connect, new_prefix, wipe
from tests.fakes.sockets import BrokenSocket, RecordingSocket
from tests.fakes.waiting import eventually

pytestmark = pytest.mark.redis

MITRA, CUSTOMER = Participant.MITRA, Participant.CUSTOMER


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    client = await connect()
    prefix = new_prefix()
    yield prefix
    await wipe(client, prefix)
    await client.aclose()


@pytest.fixture
async def clients() -> AsyncIterator[list[Redis]]:
    made: list[Redis] = []
    yield made
    for client in made:
        await client.aclose()


async def instance(clients: list[Redis], prefix: str, **kw: float) -> RedisSocketBridge:
    client = await connect()
    clients.append(client)
    bridge = RedisSocketBridge(WebSocketHub(), client, prefix=prefix, **kw)
    assert await bridge.start()
    return bridge


async def test_a_send_from_b_reaches_the_socket_on_a(clients: list[Redis], prefix: str) -> None:
    a = await instance(clients, prefix)
    b = await instance(clients, prefix)
    try:
        ws = RecordingSocket()
        await a.register(ws, MITRA, "m-1", session_id="s-1")

        assert await b.send("s-1", MITRA, {"type": "extension_request", "n": 1}) is True
        assert ws.frames == [{"type": "extension_request", "n": 1}]
        # nobody of the other side, nobody on another session
        assert await b.send("s-1", CUSTOMER, {"type": "session_paused"}) is False
        assert await b.send("s-2", MITRA, {"type": "extension_request"}) is False
        assert ws.frames == [{"type": "extension_request", "n": 1}]

        assert await b.is_connected(MITRA, "m-1") is True
        assert await b.is_connected(MITRA, "m-2") is False
        assert await b.is_connected(CUSTOMER, "m-1") is False

        await a.unregister(ws)
        assert await b.is_connected(MITRA, "m-1") is False
        assert await b.send("s-1", MITRA, {"type": "extension_request"}) is False
    finally:
        await a.aclose()
        await b.aclose()


async def test_a_general_socket_counts_as_connected_but_not_on_the_session(
    clients: list[Redis], prefix: str
) -> None:
    a = await instance(clients, prefix)
    b = await instance(clients, prefix)
    try:
        home = RecordingSocket()
        await a.register(home, MITRA, "m-1")  # the Home screen's socket, no session
        assert await b.is_connected(MITRA, "m-1") is True
        assert await b.send("s-1", MITRA, {"type": "extension_request"}) is False
        assert home.frames == []
    finally:
        await a.aclose()
        await b.aclose()


async def test_sockets_on_both_instances_both_get_it(clients: list[Redis], prefix: str) -> None:
    a = await instance(clients, prefix)
    b = await instance(clients, prefix)
    try:
        phone, tablet = RecordingSocket(), RecordingSocket()
        await a.register(phone, CUSTOMER, "c-1", session_id="s-1")
        await b.register(tablet, CUSTOMER, "c-1", session_id="s-1")
        assert await b.send("s-1", CUSTOMER, {"type": "session_resumed"}) is True
        assert phone.frames == tablet.frames == [{"type": "session_resumed"}]
    finally:
        await a.aclose()
        await b.aclose()


async def test_a_dropped_socket_is_not_taken_and_is_forgotten(
    clients: list[Redis], prefix: str
) -> None:
    a = await instance(clients, prefix)
    b = await instance(clients, prefix)
    try:
        gone = BrokenSocket()
        await a.register(gone, MITRA, "m-1", session_id="s-1")
        assert await b.send("s-1", MITRA, {"type": "extension_request"}) is False
        assert gone.attempts == 1
        assert not a.hub.held_keys()

        async def forgotten() -> bool:
            return not await b.is_connected(MITRA, "m-1")

        await eventually(forgotten)
    finally:
        await a.aclose()
        await b.aclose()


async def test_an_instance_not_listening_is_unreachable_until_its_entry_lapses(
    clients: list[Redis], prefix: str
) -> None:
    a = await instance(clients, prefix, ttl=1.0)
    b = await instance(clients, prefix, ttl=1.0)
    try:
        await a.register(RecordingSocket(), MITRA, "m-1", session_id="s-1")
        await a.aclose(forget=False)  # crashed, or cut off from Redis: nobody listens
        # Not "not taken": the socket may be there (a partition heals); retry or push.
        with pytest.raises(SocketUnreachable) as caught:
            await b.send("s-1", MITRA, {"type": "session_closing"})
        assert caught.value.retryable is True

        # Connected needs a live answer: nobody listens, so not connected at once.
        assert await b.is_connected(MITRA, "m-1") is False

        async def lapsed() -> bool:
            with contextlib.suppress(SocketUnreachable):
                return await b.send("s-1", MITRA, {"type": "session_closing"}) is False
            return False

        await eventually(lapsed)  # no heartbeat: the entry is gone after ttl
    finally:
        await b.aclose()


async def test_a_crashed_instance_falls_out_of_the_registry_by_ttl(
    clients: list[Redis], prefix: str
) -> None:
    a = await instance(clients, prefix, ttl=1.0)
    b = await instance(clients, prefix, ttl=1.0)
    try:
        await a.register(RecordingSocket(), MITRA, "m-1", session_id="s-1")
        assert await b.is_connected(MITRA, "m-1") is True
        await a.aclose(forget=False)  # no goodbye, no more heartbeats: a crash
        registry = f"{prefix}sock:u:mitra:m-1"
        assert await clients[0].zcard(registry) == 1  # still named there, but
        assert await b.is_connected(MITRA, "m-1") is False  # nobody answers for it

        async def expired() -> bool:
            return int(await clients[0].zcount(registry, time.time(), "+inf")) == 0

        await eventually(expired)
        assert await b.send("s-1", MITRA, {"type": "extension_request"}) is False
    finally:
        await b.aclose()


async def test_the_heartbeat_keeps_a_live_registration(clients: list[Redis], prefix: str) -> None:
    a = await instance(clients, prefix, ttl=0.6)
    b = await instance(clients, prefix, ttl=0.6)
    try:
        await a.register(RecordingSocket(), MITRA, "m-1", session_id="s-1")
        beats = 0

        async def outlived_three_ttls() -> bool:
            nonlocal beats
            assert await b.is_connected(MITRA, "m-1")  # never lapses while A beats
            beats += 1
            return beats >= 40  # 40 polls x 0.05 s > 3 x ttl

        await eventually(outlived_three_ttls)
    finally:
        await a.aclose()
        await b.aclose()


async def test_unreachable_redis_at_the_edge() -> None:
    client = Redis.from_url(f"redis://127.0.0.1:{closed_port()}/0", socket_connect_timeout=1)
    bridge = RedisSocketBridge(WebSocketHub(), client, prefix=new_prefix())
    try:
        assert await bridge.start(ready_timeout=0.2) is False
        with pytest.raises(DeliveryError) as caught:
            await bridge.send("s-1", MITRA, {"type": "extension_request"})
        assert caught.value.retryable is True
        # fail safe: unknown means not connected (no auto-approve)
        assert await bridge.is_connected(MITRA, "m-1") is False
        # a socket of this instance still takes it, Redis or not
        ws = RecordingSocket()
        await bridge.register(ws, MITRA, "m-1", session_id="s-1")
        assert await bridge.send("s-1", MITRA, {"type": "extension_request"}) is True
        assert await bridge.is_connected(MITRA, "m-1") is True
        assert ws.frames == [{"type": "extension_request"}]
    finally:
        await bridge.aclose()
        await client.aclose()


NOW = datetime(2026, 5, 21, 5, 0, tzinfo=UTC)


async def test_a_redis_drop_does_not_lose_an_outbox_row(clients: list[Redis], prefix: str) -> None:
    """Both participants' sockets live on A; the service runs on B, whose link
    to Redis is cut while the customer asks.  The state change commits; the
    mitra's request, which has a push, is pushed at once (socket layer down);
    the customer's ``session_paused``, which has none, stays in the outbox,
    and once Redis is back the dispatcher delivers it to the socket on A."""
    probe = await connect()
    clients.append(probe)
    pool = probe.connection_pool.connection_kwargs
    proxy = await RedisProxy(str(pool["host"]), int(pool["port"])).start()
    a = await instance(clients, prefix)
    b_client = await connect(proxy.url)
    clients.append(b_client)
    b = RedisSocketBridge(WebSocketHub(), b_client, prefix=prefix)
    assert await b.start()

    clock = VirtualClock(NOW)
    store = MemoryStore()
    store.add_session(
        Session("s-1", "c-1", "m-1", SessionStatus.ACTIVE, NOW + timedelta(1), "Sari")
    )
    store.add_payment(PaymentSession("p-1", "c-1", PaymentStatus.CONFIRMED, 25000))
    push = MemoryPush()
    service = ExtensionService(
        store,
        clock=clock,
        config=StaticConfig(),
        sockets=b,
        presence=MemoryPresence(),
        push=push,
        session_timer=MemorySessionTimer(),
    )
    mitra_ws, customer_ws = RecordingSocket(), RecordingSocket()
    await a.register(mitra_ws, MITRA, "m-1", session_id="s-1")
    await a.register(customer_ws, CUSTOMER, "c-1", session_id="s-1")
    try:
        await proxy.cut()
        ext = await service.request_extension(
            session_id="s-1",
            customer_id="c-1",
            duration_minutes=30,
            price=25000,
            extension_payment_session_id="p-1",
        )
        await service.dispatcher.drain()  # its delivery, tried while Redis is cut
        dump = await store.dump()
        assert [e.status.value for e in dump.extensions] == ["pending"]
        undelivered = [m for m, delivered in dump.outbox if not delivered]
        assert [m.payload["recipient"] for m in undelivered] == ["customer"]
        assert [(d.participant, d.user_id) for d in push.sent] == [(MITRA, "m-1")]
        assert mitra_ws.frames == [] and customer_ws.frames == []

        await proxy.restore()

        async def relistening() -> bool:
            return b.is_live

        await eventually(relistening)
        await clock.advance(5)  # past the first retry's backoff
        report = await service.dispatcher.dispatch_due()
        assert report.delivered == 1
        assert all(delivered for _, delivered in (await store.dump()).outbox)
        [frame] = customer_ws.frames
        assert frame["type"] == "session_paused"
        assert frame["dedupe_key"] == f"{ext.id}:session_paused:customer"
        assert mitra_ws.frames == []  # it went by push; no second copy on the socket
    finally:
        await a.aclose()
        await b.aclose()
        await proxy.cut()
