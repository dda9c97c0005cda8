"""Fresh presence: an auto-approval rests on a live answer from the instance
holding the mitra's socket, never on a registry entry or flag that outlives
that instance.  After ``kill -9`` of the holder (a real process), or while it
is frozen (it neither answers nor heart-beats), a deadline on PostgreSQL is
timed out uncharged, though the registry and the online flag still name the
mitra for up to their 30 s TTL."""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from redis.asyncio import Redis

from extension_fsm import ExtensionService
from extension_fsm.adapters.clock import VirtualClock
from extension_fsm.adapters.redis_bridge import RedisSocketBridge
from extension_fsm.adapters.redis_presence import RedisPresence
from extension_fsm.adapters.sqlalchemy import SqlAlchemyStore
from extension_fsm.adapters.websocket import WebSocketHub
from extension_fsm.model import ExtensionStatus, Participant, PaymentStatus, TimeoutReason
from tests.fakes.redis_env import connect, new_prefix, redis_relay, redis_url, wipe
from tests.fakes.sockets import RecordingSocket
from tests.fakes.tcp_proxy import TcpProxy
from tests.fakes.waiting import eventually
from tests.integration.host_rows import T0, Host, make_service
from tests.integration.sql_support import private_postgres_database

pytestmark = pytest.mark.redis

ROOT = Path(__file__).resolve().parents[2]
MITRA = Participant.MITRA
#: generous bounds against a hang on a busy machine, not speed checks
ACK_TIMEOUT = 2.0
PRESENCE_TIMEOUT = 4.0


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    with private_postgres_database("fresh") as url:
        yield url


@pytest.fixture
async def host(pg_url: str) -> AsyncIterator[Host]:
    store = await SqlAlchemyStore.open(
        pg_url, create_schema=True, table_prefix=f"p{uuid.uuid4().hex[:8]}_", clock="local"
    )
    try:
        yield Host("postgres", store)
    finally:
        await store.aclose()


@pytest.fixture
async def redis() -> AsyncIterator[tuple[Redis, str]]:
    client = await connect()
    prefix = new_prefix()
    yield client, prefix
    await wipe(client, prefix)
    await client.aclose()


def _service(host: Host, bridge: RedisSocketBridge, presence: RedisPresence) -> ExtensionService:
    service = make_service(
        host.store, VirtualClock(T0 + timedelta(seconds=1)), sockets=bridge, presence=presence
    )
    service.presence_timeout = PRESENCE_TIMEOUT
    return service


async def _sweep(
    service: ExtensionService, host: Host, tag: str, n: int = 1
) -> tuple[set[str], int]:
    """Seed ``n`` due extensions of mitra m1 and sweep: (their statuses, ledger rows)."""
    ids = set(await host.seed_due(n, tag=tag))
    resolved = await asyncio.wait_for(service.sweep_due(), 60)
    await asyncio.wait_for(service.dispatcher.drain(), 60)  # its deliveries end here
    exts = [e for e in resolved if e.id in ids]
    assert len(exts) == n
    dump = await host.store.dump()
    for ext in exts:
        if ext.status is ExtensionStatus.TIMEOUT:
            assert ext.reason is TimeoutReason.SAFEGUARD
            (payment,) = [p for p in dump.payments if p.id == ext.payment_session_id]
            assert payment.status is PaymentStatus.FAILED
    return {str(e.status) for e in exts}, len(dump.ledger)


async def test_fresh_presence_after_kill_9_of_the_socket_holder_nothing_is_approved(
    host: Host, redis: tuple[Redis, str]
) -> None:
    client, prefix = redis
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    holder = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.fakes.socket_holder",
        redis_url(),
        prefix,
        "m1",
        "s-chat",
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
        env=env,
    )
    bridge = RedisSocketBridge(WebSocketHub(), client, prefix=prefix, ack_timeout=ACK_TIMEOUT)
    try:
        assert holder.stdout is not None
        line = await asyncio.wait_for(holder.stdout.readline(), 60)
        assert line.startswith(b"ready "), line
        assert await bridge.start()
        presence = RedisPresence(client, prefix=prefix)
        await presence.set_online("m1")  # as the host did when the socket opened
        service = _service(host, bridge, presence)

        # While the holder lives and answers, a deadline auto-approves.
        assert await _sweep(service, host, "before") == ({"accepted"}, 1)

        holder.kill()  # kill -9: no goodbye, the registry entries stay behind
        await asyncio.wait_for(holder.wait(), 30)
        registry = f"{prefix}sock:u:mitra:m1"
        assert int(await client.zcount(registry, time.time(), "+inf")) == 1
        assert await presence.is_online("m1") is True  # the flag lives on, too

        # Nothing the holder answered for is approved after its death: ten
        # deadlines decided at once, while its entry and the flag still live.
        assert await bridge.is_connected(MITRA, "m1") is False
        assert await _sweep(service, host, "after", n=10) == ({"timeout"}, 1)
    finally:
        if holder.returncode is None:
            holder.kill()
            await holder.wait()
        await bridge.aclose()


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    relay = redis_relay()
    yield relay
    relay.stop()


async def test_fresh_presence_a_frozen_holder_is_not_proof(
    host: Host, redis: tuple[Redis, str], proxy: TcpProxy
) -> None:
    """The holder stops answering and stops heart-beating (its link to Redis
    holds every byte): its subscription and registry entry are still there,
    but no answer comes, so no approval; once it answers again, approvals do."""
    client, prefix = redis
    holder_client = Redis.from_url(
        f"redis://127.0.0.1:{proxy.port}/0", socket_connect_timeout=2, socket_timeout=None
    )
    holder = RedisSocketBridge(WebSocketHub(), holder_client, prefix=prefix)
    bridge = RedisSocketBridge(WebSocketHub(), client, prefix=prefix, ack_timeout=ACK_TIMEOUT)
    try:
        assert await holder.start() and await bridge.start()
        await holder.register(RecordingSocket(), MITRA, "m1", "s-chat")
        presence = RedisPresence(client, prefix=prefix)
        await presence.set_online("m1")
        service = _service(host, bridge, presence)
        assert await _sweep(service, host, "live") == ({"accepted"}, 1)

        proxy.blackhole()  # frozen: nothing in or out, the subscription stays
        ((_, listeners),) = await client.pubsub_numsub(f"{prefix}inst:{holder.instance_id}")
        assert int(listeners) == 1
        assert await _sweep(service, host, "frozen") == ({"timeout"}, 1)

        proxy.recover()

        async def answers_again() -> bool:
            return await bridge.is_connected(MITRA, "m1")

        await eventually(answers_again, within=30)
        assert await _sweep(service, host, "back") == ({"accepted"}, 2)
    finally:
        proxy.recover()
        await holder.aclose(forget=False)
        await holder_client.aclose()
        await bridge.aclose()


async def test_fresh_presence_the_online_flag_can_be_held_to_a_fresher_bound(
    redis: tuple[Redis, str],
) -> None:
    client, prefix = redis
    presence = RedisPresence(client, prefix=prefix, ttl=30, fresh_within=5)
    key = f"{prefix}online:m1"
    assert await presence.is_online("m1") is False
    await presence.set_online("m1")
    assert await presence.is_online("m1") is True
    await client.pexpire(key, 24_000)  # as if the last heartbeat were 6 s ago
    assert await presence.is_online("m1") is False  # stale, though the flag lives
    assert await RedisPresence(client, prefix=prefix, ttl=30).is_online("m1") is True
    assert await presence.heartbeat("m1") is True
    assert await presence.is_online("m1") is True
    await client.persist(key)  # a flag someone else wrote without a TTL
    assert await presence.is_online("m1") is False
    for bad in (0, -1, 31):
        with pytest.raises(ValueError, match="fresh_within"):
            RedisPresence(client, prefix=prefix, ttl=30, fresh_within=bad)
