"""Delivery ports that do nothing and keep nothing (so benchmarks time only the
library; the recording fakes of ``adapters.memory`` would add their own cost).
Configuration comes from ``adapters.config.StaticConfig``."""

from __future__ import annotations

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

    async def expiry_extended(self, session_id: str, expires_at: datetime) -> None:
        return None

    async def start_closure_grace(self, session_id: str, deadline: datetime) -> None:
        return None

    async def clear_closure_grace(self, session_id: str) -> None:
        return None
