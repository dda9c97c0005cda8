"""A blackholed Redis (connections accepted, nothing ever answered) is
"unreachable" for the socket bridge within its ``redis_timeout``, not a hang:
``is_connected`` says no (never an auto-approve), a send is a retryable
failure the outbox backs off from, and a local socket still takes a message."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from extension_fsm import DeliveryError, Participant
from extension_fsm.adapters.redis_bridge import RedisSocketBridge
from extension_fsm.adapters.websocket import WebSocketHub
from tests.fakes.redis_env import new_prefix
from tests.fakes.sockets import RecordingSocket

MITRA = Participant.MITRA
BOUND = 10.0  # against a hang only


@pytest.fixture
async def blackhole() -> AsyncIterator[str]:
    """A loopback server that accepts connections and never answers."""
    held: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        with contextlib.suppress(ConnectionError):
            while await reader.read(65536):
                pass

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"redis://127.0.0.1:{port}/0"
    for writer in held:
        writer.close()
    server.close()
    await server.wait_closed()


async def test_a_blackholed_redis_is_unreachable_not_a_hang(blackhole: str) -> None:
    client = Redis.from_url(blackhole, socket_connect_timeout=1)  # no socket timeout of its own
    bridge = RedisSocketBridge(WebSocketHub(), client, prefix=new_prefix(), redis_timeout=0.2)
    try:
        connected = await asyncio.wait_for(bridge.is_connected(MITRA, "m-1"), BOUND)
        assert connected is False  # unknown is "not connected": never approves
        with pytest.raises(DeliveryError) as caught:
            await asyncio.wait_for(bridge.send("s-1", MITRA, {"type": "extension_request"}), BOUND)
        assert caught.value.retryable is True
        ws = RecordingSocket()
        bridge.hub.register(ws, MITRA, "m-1", session_id="s-1")
        taken = await asyncio.wait_for(
            bridge.send("s-1", MITRA, {"type": "extension_request"}), BOUND
        )
        assert taken is True and ws.frames == [{"type": "extension_request"}]
    finally:
        await bridge.aclose(forget=False)
        await client.aclose()


def test_the_redis_timeout_must_be_positive() -> None:
    client = Redis.from_url("redis://127.0.0.1:1/0")
    with pytest.raises(ValueError, match="redis_timeout"):
        RedisSocketBridge(WebSocketHub(), client, redis_timeout=0)
