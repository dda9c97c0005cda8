"""Socket layer down => push at once.

The service runs its sockets through :class:`RedisSocketBridge`; Redis goes
away (refusing connections, or blackholed: connections accepted, nothing
answered) after the bridge was up.  The mitra's ``extension_request`` then
reaches the phone by push, through the real firebase_admin code path against
a loopback FCM server, on the request's own post-commit delivery, as the
replaced service pushed when its socket send failed.  The answer deadline is
the one the request was given, and the sweep meets it as usual.

Every wait is bounded (a hang fails the test); nothing asserts a duration.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import firebase_admin
import pytest
from redis.asyncio import Redis

from extension_fsm import (
    ExtensionService,
    ExtensionStatus,
    Participant,
    PaymentSession,
    PaymentStatus,
    Session,
    SessionStatus,
    TimeoutAction,
)
from extension_fsm.adapters.clock import VirtualClock
from extension_fsm.adapters.fcm import FcmPushSender
from extension_fsm.adapters.memory import (
    MemoryDeviceTokens,
    MemoryPresence,
    MemorySessionTimer,
    MemoryStore,
)
from extension_fsm.adapters.redis_bridge import RedisSocketBridge
from extension_fsm.adapters.websocket import WebSocketHub
from tests.fakes.fcm_server import FakeFcm, firebase_app
from tests.fakes.redis_env import connect, new_prefix, wipe
from tests.fakes.tcp_proxy import TcpProxy

pytestmark = pytest.mark.redis

NOW = datetime(2026, 5, 21, 5, 0, tzinfo=UTC)
TIMEOUT = 10
BOUND = 20.0  # seconds: against a hang only


@dataclass
class _Config:
    """The host's settings (a plain ConfigSource)."""

    action: TimeoutAction = TimeoutAction.AUTO_APPROVE

    async def extension_timeout_seconds(self) -> int:
        return TIMEOUT

    async def extension_timeout_action(self) -> TimeoutAction | str:
        return self.action

    async def closure_grace_seconds(self) -> int:
        return 60


@pytest.fixture(scope="module")
def fcm() -> Iterator[FakeFcm]:
    server = FakeFcm().start()
    yield server
    server.stop()


@pytest.fixture
def app(fcm: FakeFcm) -> Iterator[Any]:
    fcm.requests.clear()
    fcm.script.clear()
    app = firebase_app(fcm, f"socket-down-{uuid.uuid4().hex}")
    yield app
    firebase_admin.delete_app(app)


@pytest.fixture
async def redis_proxy() -> AsyncIterator[TcpProxy]:
    """A loopback relay in front of the test Redis that the test can cut."""
    probe = await connect()
    pool = probe.connection_pool.connection_kwargs
    proxy = TcpProxy(str(pool["host"]), int(pool["port"])).start()
    try:
        yield proxy
    finally:
        proxy.stop()
        await probe.aclose()


def _outage(proxy: TcpProxy, kind: str) -> None:
    if kind == "refused":
        proxy.refuse()
    else:
        proxy.blackhole()


@pytest.mark.parametrize("outage", ["refused", "blackholed"])
async def test_socket_layer_down_pushes_the_mitras_request_at_once(
    outage: str, redis_proxy: TcpProxy, app: Any, fcm: FakeFcm
) -> None:
    prefix = new_prefix()
    client = Redis.from_url(
        f"redis://127.0.0.1:{redis_proxy.port}/0",
        socket_connect_timeout=1,
        socket_timeout=2,
    )
    bridge = RedisSocketBridge(WebSocketHub(), client, prefix=prefix, redis_timeout=0.5)
    assert await bridge.start()  # up before the outage: the usual case
    clock = VirtualClock(NOW)
    store = MemoryStore()
    store.add_session(
        Session("s-1", "c-1", "m-1", SessionStatus.ACTIVE, NOW + timedelta(minutes=5), "Sari")
    )
    store.add_payment(PaymentSession("p-1", "c-1", PaymentStatus.CONFIRMED, 25000))
    tokens = MemoryDeviceTokens({(Participant.MITRA, "m-1"): ["mitra-phone"]})
    service = ExtensionService(
        store,
        clock=clock,
        config=_Config(),
        sockets=bridge,
        presence=MemoryPresence({"m-1": True}),
        push=FcmPushSender(app, tokens, endpoint=fcm.url, timeout=5.0),
        session_timer=MemorySessionTimer(),
    )
    try:
        _outage(redis_proxy, outage)
        ext = await service.request_extension(
            session_id="s-1",
            customer_id="c-1",
            duration_minutes=30,
            price=25000,
            extension_payment_session_id="p-1",
        )
        async with asyncio.timeout(BOUND):
            await service.dispatcher.drain()  # the request's own post-commit delivery

        [sent] = fcm.sends()
        message = sent.body["message"]
        assert message["token"] == "mitra-phone"
        assert message["notification"]["title"] == "Permintaan Perpanjang"
        assert message["data"]["type"] == "extension_request"
        assert message["data"]["extension_id"] == ext.id
        # The deadline is the request's own, untouched by the outage ...
        assert ext.expires_at == ext.requested_at + timedelta(seconds=TIMEOUT)
        # ... and the sweep meets it: the mitra's socket presence is unknown
        # with Redis down, so the auto-approval is refused without a charge.
        await clock.advance(TIMEOUT)
        async with asyncio.timeout(BOUND):
            [resolved] = await service.sweep_due()
        assert resolved.id == ext.id and resolved.status is ExtensionStatus.TIMEOUT
        dump = await store.dump()
        assert [p.status for p in dump.payments] == [PaymentStatus.FAILED]
    finally:
        redis_proxy.recover()
        await service.aclose(grace=0)
        await bridge.aclose(forget=False)
        await client.aclose()
        cleaner = await connect()
        await wipe(cleaner, prefix)
        await cleaner.aclose()
