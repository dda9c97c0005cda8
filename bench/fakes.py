"""Delivery ports for the benchmarks: ones that do nothing and keep nothing (so
a case times the library, not a recording fake), in-memory sockets that take
every frame, and slow ones for the lateness case.  Configuration comes from
``adapters.config.StaticConfig``."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import datetime

from extension_fsm.model import JSONValue, Participant, PushMessage


class NullSockets:
    """Nobody is on a socket: every notification falls back to push."""

    async def send(
        self, session_id: str, participant: Participant, message: Mapping[str, JSONValue]
    ) -> bool:
        return False

    async def is_connected(self, participant: Participant, user_id: str) -> bool:
        return False


class InMemorySockets:
    """Everybody is on a socket in this process: every frame is taken (and counted)."""

    def __init__(self) -> None:
        self.sent = 0

    async def send(
        self, session_id: str, participant: Participant, message: Mapping[str, JSONValue]
    ) -> bool:
        self.sent += 1
        return True

    async def is_connected(self, participant: Participant, user_id: str) -> bool:
        return True


class NullPresence:
    """Nobody is online."""

    async def is_online(self, mitra_id: str) -> bool:
        return False


class CountingPush:
    """Counts pushes, keeps none."""

    def __init__(self) -> None:
        self.sent = 0

    async def send(self, participant: Participant, user_id: str, message: PushMessage) -> None:
        self.sent += 1


class NullSessionTimer:
    """The host's session timers, ignored."""

    async def expiry_extended(self, session_id: str, expires_at: datetime, *, seq: int) -> None:
        return None

    async def start_closure_grace(self, session_id: str, deadline: datetime, *, seq: int) -> None:
        return None

    async def clear_closure_grace(self, session_id: str, *, seq: int) -> None:
        return None


class SlowPush(CountingPush):
    """A push service that answers after ``delay`` seconds."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay

    async def send(self, participant: Participant, user_id: str, message: PushMessage) -> None:
        await asyncio.sleep(self.delay)
        self.sent += 1


class SlowRedis:
    """Presence and the socket bridge behind a Redis that answers after ``delay``
    seconds: nobody online, no socket takes a frame (so every notice is pushed)."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.asked = 0

    async def is_online(self, mitra_id: str) -> bool:
        self.asked += 1
        await asyncio.sleep(self.delay)
        return False

    async def send(
        self, session_id: str, participant: Participant, message: Mapping[str, JSONValue]
    ) -> bool:
        await asyncio.sleep(self.delay)
        return False

    async def is_connected(self, participant: Participant, user_id: str) -> bool:
        await asyncio.sleep(self.delay)
        return False
