"""What a separate worker process shares with its host over Redis: the
session timer (a stream the host consumes) and the push-token registry.

The host's session timers live in the host.  A worker that resolves a
deadline writes each session-timer instruction to the stream
``{prefix}session_timer`` (``XADD``, approximately capped): fields
``action`` (``expiry_extended`` | ``start_closure_grace`` |
``clear_closure_grace``), ``session_id``, ``at`` (ISO-8601 UTC, empty for
a clear) and ``seq`` (the command's place in commit order within its
session).  The host reads it with a consumer group (``XREADGROUP``), applies
each entry, ``XACK``s it; applying one twice must be harmless (the values are
absolute times, so a repeat sets the same timer again).

Fenced: one script compares the command's ``seq`` with the highest one
written for its session (the string ``{prefix}session_timer:seq:{session}``,
kept ``fence_ttl`` seconds after the last write) and appends only a newer
command.  A write that was held up on its way (it timed out on a stalled
connection, was retried on another and delivered, and then the stalled one
reached Redis after the commands behind it) is dropped, never appended after
a newer one; each drop counts in ``{prefix}session_timer:stale``.  A consumer
still drops an entry whose ``seq`` is not above the highest it applied for
the session (entries written before the fence have none).

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


#: KEYS: the session's fence, the stream, the stale-drop counter; ARGV: seq,
#: the fence's lifetime in ms, the cap, action, session id, at.  Runs
#: atomically: a command not newer than the fence is counted and dropped.
_FENCED_XADD = """
local held = tonumber(redis.call('GET', KEYS[1]) or '0')
local seq = tonumber(ARGV[1])
if seq <= held then
  redis.call('INCR', KEYS[3])
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*',
  'action', ARGV[4], 'session_id', ARGV[5], 'at', ARGV[6], 'seq', ARGV[1])
return 1
"""


class RedisStreamSessionTimer:
    """:class:`~extension_fsm.ports.SessionTimer` as entries on a Redis stream,
    fenced by ``seq`` per session (see the module docstring)."""

    def __init__(
        self,
        redis: Redis,
        *,
        prefix: str = "extension_fsm:",
        maxlen: int = 100_000,
        fence_ttl: float = 7 * 24 * 3600.0,
    ):
        if not fence_ttl > 0:
            raise ValueError(f"fence_ttl must be positive, got {fence_ttl}")
        self._redis = redis
        self.stream = f"{prefix}session_timer"
        #: how many held-up commands the fence dropped (an ever-growing count)
        self.stale_key = f"{prefix}session_timer:stale"
        self._fence_prefix = f"{prefix}session_timer:seq:"
        self._maxlen = maxlen
        self._fence_ms = max(1, int(fence_ttl * 1000))
        self._script = redis.register_script(_FENCED_XADD)

    def fence_key(self, session_id: str) -> str:
        """The string holding the highest ``seq`` written for ``session_id``."""
        return f"{self._fence_prefix}{session_id}"

    async def expiry_extended(self, session_id: str, expires_at: datetime, *, seq: int) -> None:
        await self._add("expiry_extended", session_id, expires_at.isoformat(), seq)

    async def start_closure_grace(self, session_id: str, deadline: datetime, *, seq: int) -> None:
        await self._add("start_closure_grace", session_id, deadline.isoformat(), seq)

    async def clear_closure_grace(self, session_id: str, *, seq: int) -> None:
        await self._add("clear_closure_grace", session_id, "", seq)

    async def _add(self, action: str, session_id: str, at: str, seq: int) -> None:
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
            raise DeliveryError(f"seq must be a whole number >= 1, got {seq!r}", retryable=False)
        keys = [self.fence_key(session_id), self.stream, self.stale_key]
        args: list[str | int] = [seq, self._fence_ms, self._maxlen, action, session_id, at]
        try:
            await self._script(keys=keys, args=args)
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
