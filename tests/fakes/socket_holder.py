"""A backend instance in its own process that holds one mitra's socket, for
tests that kill it (``kill -9``) and look at what the others then believe.

Run as ``python -m tests.fakes.socket_holder REDIS_URL PREFIX MITRA_ID
SESSION_ID``: it starts a :class:`RedisSocketBridge`, registers a socket of the
mitra on the session, prints ``ready <instance id>`` and waits to be killed.
"""

from __future__ import annotations

import asyncio
import sys

from redis.asyncio import Redis

from extension_fsm.adapters.redis_bridge import RedisSocketBridge
from extension_fsm.adapters.websocket import WebSocketHub
from extension_fsm.model import Participant
from tests.fakes.sockets import RecordingSocket


async def main(url: str, prefix: str, mitra_id: str, session_id: str) -> None:
    client = Redis.from_url(url, socket_connect_timeout=2)
    bridge = RedisSocketBridge(WebSocketHub(), client, prefix=prefix)
    if not await bridge.start():
        raise SystemExit("the bridge could not subscribe")
    await bridge.register(RecordingSocket(), Participant.MITRA, mitra_id, session_id)
    print("ready", bridge.instance_id, flush=True)
    await asyncio.Event().wait()  # until killed


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
