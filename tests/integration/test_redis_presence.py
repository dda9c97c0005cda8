"""RedisPresence against the real Redis: the online flag, heartbeats, expiry
by TTL, and the fail-safe answer when Redis is unreachable."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from extension_fsm import DeliveryError
from extension_fsm.adapters.redis_presence import RedisPresence
from tests.fakes.redis_env import closed_port, connect, new_prefix, wipe
from tests.fakes.waiting import eventually

pytestmark = pytest.mark.redis


@pytest.fixture
async def client() -> AsyncIterator[tuple[Redis, str]]:
    redis = await connect()
    prefix = new_prefix()
    yield redis, prefix
    await wipe(redis, prefix)
    await redis.aclose()


async def test_online_heartbeat_offline(client: tuple[Redis, str]) -> None:
    redis, prefix = client
    presence = RedisPresence(redis, prefix=prefix, ttl=30)
    assert await presence.is_online("m-1") is False
    await presence.set_online("m-1")
    assert await presence.is_online("m-1") is True
    assert await presence.is_online("m-2") is False
    assert await presence.heartbeat("m-1") is True
    await presence.set_offline("m-1")
    assert await presence.is_online("m-1") is False
    # a heartbeat never brings back a mitra who went offline
    assert await presence.heartbeat("m-1") is False
    assert await presence.is_online("m-1") is False


async def test_the_flag_expires_without_heartbeats(client: tuple[Redis, str]) -> None:
    redis, prefix = client
    presence = RedisPresence(redis, prefix=prefix, ttl=1)
    await presence.set_online("m-1")
    assert await presence.is_online("m-1") is True
    assert 0 < await redis.pttl(f"{prefix}online:m-1") <= 1000

    async def offline() -> bool:
        return not await presence.is_online("m-1")

    await eventually(offline)
    assert await presence.heartbeat("m-1") is False


async def test_heartbeats_refresh_the_ttl(client: tuple[Redis, str]) -> None:
    redis, prefix = client
    presence = RedisPresence(redis, prefix=prefix, ttl=60)
    await presence.set_online("m-1")
    await redis.pexpire(f"{prefix}online:m-1", 5000)  # as if 55 s had passed
    assert await presence.heartbeat("m-1") is True
    assert await redis.pttl(f"{prefix}online:m-1") > 5000


async def test_unreachable_redis_is_offline_and_writes_are_retryable() -> None:
    redis = Redis.from_url(f"redis://127.0.0.1:{closed_port()}/0", socket_connect_timeout=1)
    presence = RedisPresence(redis, prefix=new_prefix())
    try:
        assert await presence.is_online("m-1") is False  # fail safe: no auto-approve
        for write in (presence.set_online, presence.heartbeat, presence.set_offline):
            with pytest.raises(DeliveryError) as caught:
                await write("m-1")
            assert caught.value.retryable is True
    finally:
        await redis.aclose()
