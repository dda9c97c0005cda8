"""``RedisDeviceTokens``: the 10 most recent tokens per user, kept by one script
even when instances register at once; a dead token leaves every key."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from extension_fsm import Participant
from extension_fsm.adapters.redis_host import RedisDeviceTokens
from tests.fakes.redis_env import connect, new_prefix, wipe

pytestmark = pytest.mark.redis

MITRA = Participant.MITRA


@pytest.fixture
async def client() -> AsyncIterator[Redis]:
    c = await connect()
    try:
        yield c
    finally:
        await c.aclose()


@pytest.fixture
async def prefix(client: Redis) -> AsyncIterator[str]:
    p = new_prefix()
    try:
        yield p
    finally:
        await wipe(client, p)


async def test_only_the_most_recent_tokens_stay(client: Redis, prefix: str) -> None:
    tokens = RedisDeviceTokens(client, prefix=prefix)
    for i in range(5):
        await tokens.register(MITRA, "m-1", f"t{i}", keep=3)
    await tokens.register(MITRA, "m-1", "t2", keep=3)  # again: the newest now
    await tokens.register(MITRA, "m-1", "t5", keep=3)
    assert await tokens.tokens(MITRA, "m-1") == ["t2", "t4", "t5"]
    # Forgotten tokens leave their owner key too; kept ones keep it.
    assert await client.get(f"{prefix}push-owner:t0") is None
    assert await client.get(f"{prefix}push-owner:t2") == tokens.key(MITRA, "m-1").encode()
    assert await tokens.tokens(MITRA, "m-2") == []


async def test_registrations_at_once_still_keep_at_most_keep(client: Redis, prefix: str) -> None:
    instances = [RedisDeviceTokens(client, prefix=prefix) for _ in range(4)]
    await asyncio.gather(
        *(instances[i % 4].register(MITRA, "m-1", f"t{i}", keep=10) for i in range(40))
    )
    kept = await instances[0].tokens(MITRA, "m-1")
    assert len(kept) == 10
    assert await client.zcard(f"{prefix}push-order:mitra:m-1") == 10


async def test_a_dead_token_leaves_the_set_and_the_order(client: Redis, prefix: str) -> None:
    tokens = RedisDeviceTokens(client, prefix=prefix)
    await tokens.register(MITRA, "m-1", "a")
    await tokens.register(MITRA, "m-1", "b")
    await tokens.remove("a")
    assert await tokens.tokens(MITRA, "m-1") == ["b"]
    assert await client.zrange(f"{prefix}push-order:mitra:m-1", 0, -1) == [b"b"]
    assert await client.get(f"{prefix}push-owner:a") is None


async def test_keep_must_be_positive(client: Redis, prefix: str) -> None:
    with pytest.raises(ValueError, match="keep"):
        await RedisDeviceTokens(client, prefix=prefix).register(MITRA, "m-1", "a", keep=0)
