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
:meth:`RedisDeviceTokens.register` does all of that in one script and keeps
only a user's most recent tokens: the sorted set
``{prefix}push-order:{participant}:{user_id}`` numbers each token by its
last registration, and the oldest beyond ``keep`` leave both sets.

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


#: KEYS: the user's set, its order, the token's owner string; ARGV: the token,
#: how many to keep, the owner-string prefix.  Runs atomically and numbers each
#: registration one above the newest (no clock), so instances registering
#: tokens of one user at once still leave exactly the ``keep`` newest.
_REGISTER = """
local top = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
local score = 1
if top[2] then
  score = tonumber(top[2]) + 1
end
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], score, ARGV[1])
redis.call('SET', KEYS[3], KEYS[1])
local keep = tonumber(ARGV[2])
local old = redis.call('ZRANGE', KEYS[2], 0, -(keep + 1))
local dropped = 0
for _, token in ipairs(old) do
  if token ~= ARGV[1] then
    redis.call('SREM', KEYS[1], token)
    redis.call('ZREM', KEYS[2], token)
    local owner = ARGV[3] .. token
    if redis.call('GET', owner) == KEYS[1] then
      redis.call('DEL', owner)
    end
    dropped = dropped + 1
  end
end
return dropped
"""


class RedisDeviceTokens:
    """:class:`~extension_fsm.ports.DeviceTokens` read from Redis sets."""

    def __init__(self, redis: Redis, *, prefix: str = "extension_fsm:") -> None:
        self._redis = redis
        self._prefix = prefix

    def key(self, participant: Participant, user_id: str) -> str:
        """The set holding the user's tokens."""
        return f"{self._prefix}push:{participant.value}:{user_id}"

    def _order_key(self, set_key: str) -> str:
        return f"{self._prefix}push-order:" + set_key.removeprefix(f"{self._prefix}push:")

    def _owner_key(self, token: str) -> str:
        return f"{self._prefix}push-owner:{token}"

    async def register(
        self, participant: Participant, user_id: str, token: str, *, keep: int = 10
    ) -> None:
        """Add ``token`` to the user's tokens (a repeat moves it to the newest);
        only the ``keep`` most recently registered ones stay."""
        if keep < 1:
            raise ValueError(f"keep must be at least 1, got {keep}")
        set_key = self.key(participant, user_id)
        keys = [set_key, self._order_key(set_key), self._owner_key(token)]
        args: list[str | int] = [token, keep, f"{self._prefix}push-owner:"]
        try:
            await self._redis.eval(_REGISTER, len(keys), *keys, *args)
        except REDIS_DOWN as err:
            raise DeliveryError(f"push tokens unreachable: {err}", retryable=True) from err

    async def tokens(self, participant: Participant, user_id: str) -> Sequence[str]:
        try:
            members = await self._redis.smembers(self.key(participant, user_id))
        except REDIS_DOWN as err:
            raise DeliveryError(f"push tokens unreachable: {err}", retryable=True) from err
        return sorted(m.decode() if isinstance(m, bytes) else str(m) for m in members)

    async def remove(self, token: str) -> None:
        owner_key = self._owner_key(token)
        try:
            owner = await self._redis.get(owner_key)
            if owner is not None:
                set_key = owner.decode() if isinstance(owner, bytes) else str(owner)
                await self._redis.srem(set_key, token)
                await self._redis.zrem(self._order_key(set_key), token)
            await self._redis.delete(owner_key)
        except REDIS_DOWN as err:
            raise DeliveryError(f"push tokens unreachable: {err}", retryable=True) from err
