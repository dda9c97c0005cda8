"""What a separate worker process shares with its host over Redis: the
session timer (a stream the host consumes) and the push-token registry.

The host's session timers live in the host.  A worker that resolves a
deadline writes each session-timer instruction to the stream
``{prefix}session_timer`` (``XADD``, approximately capped): fields
``action`` (``expiry_extended`` | ``start_closure_grace`` |
``clear_closure_grace``), ``session_id`` and ``at`` (ISO-8601 UTC, empty for
a clear).  The host reads it with a consumer group (``XREADGROUP``), applies
each entry, ``XACK``s it; applying one twice must be harmless (the values are
absolute times, so a repeat sets the same timer again).

Push tokens: the set ``{prefix}push:{participant}:{user_id}`` holds a user's
device tokens (the host ``SADD``s on registration); a token the push service
calls dead is removed from every set the string ``{prefix}push-owner:{token}``
names (the host sets it to the set's key when it registers the token).

A Redis that is down makes a write a retryable
:class:`~extension_fsm.errors.DeliveryError` (the outbox keeps the row).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from redis.asyncio import Redis

from ..errors import DeliveryError
from ..model import Participant
from .redis_bridge import REDIS_DOWN

__all__ = ["RedisDeviceTokens", "RedisStreamSessionTimer"]


class RedisStreamSessionTimer:
    """:class:`~extension_fsm.ports.SessionTimer` as entries on a Redis stream."""

    def __init__(self, redis: Redis, *, prefix: str = "extension_fsm:", maxlen: int = 100_000):
        self._redis = redis
        self.stream = f"{prefix}session_timer"
        self._maxlen = maxlen

    async def expiry_extended(self, session_id: str, expires_at: datetime) -> None:
        await self._add("expiry_extended", session_id, expires_at.isoformat())

    async def start_closure_grace(self, session_id: str, deadline: datetime) -> None:
        await self._add("start_closure_grace", session_id, deadline.isoformat())

    async def clear_closure_grace(self, session_id: str) -> None:
        await self._add("clear_closure_grace", session_id, "")

    async def _add(self, action: str, session_id: str, at: str) -> None:
        try:
            await self._redis.xadd(
                self.stream,
                {"action": action, "session_id": session_id, "at": at},
                maxlen=self._maxlen,
                approximate=True,
            )
        except REDIS_DOWN as err:
            raise DeliveryError(f"session timer stream unreachable: {err}", retryable=True) from err


class RedisDeviceTokens:
    """:class:`~extension_fsm.ports.DeviceTokens` read from Redis sets."""

    def __init__(self, redis: Redis, *, prefix: str = "extension_fsm:") -> None:
        self._redis = redis
        self._prefix = prefix

    def key(self, participant: Participant, user_id: str) -> str:
        """The set holding the user's tokens."""
        return f"{self._prefix}push:{participant.value}:{user_id}"

    async def tokens(self, participant: Participant, user_id: str) -> Sequence[str]:
        try:
            members = await self._redis.smembers(self.key(participant, user_id))
        except REDIS_DOWN as err:
            raise DeliveryError(f"push tokens unreachable: {err}", retryable=True) from err
        return sorted(m.decode() if isinstance(m, bytes) else str(m) for m in members)

    async def remove(self, token: str) -> None:
        owner_key = f"{self._prefix}push-owner:{token}"
        try:
            owner = await self._redis.get(owner_key)
            if owner is not None:
                await self._redis.srem(owner, token)
            await self._redis.delete(owner_key)
        except REDIS_DOWN as err:
            raise DeliveryError(f"push tokens unreachable: {err}", retryable=True) from err
