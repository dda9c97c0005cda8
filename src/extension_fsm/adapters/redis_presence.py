"""The mitra's online flag in Redis / Valkey: the
:class:`~extension_fsm.ports.Presence` port.

The flag is a key with a TTL (the seed keeps it in Valkey).  The mitra's app
(through the host) calls :meth:`RedisPresence.set_online` when going online
and :meth:`RedisPresence.heartbeat` every few seconds; an instance or a phone
that dies stops heartbeating and the mitra falls offline by themselves after
``ttl``.  An unreachable Redis reads as *offline*: the timeout safeguard then
refuses to auto-approve (fail safe: no charge without a reachable mitra).

``fresh_within`` (seconds, at most ``ttl``) makes :meth:`RedisPresence.is_online`
stricter than the flag's lifetime: the mitra is online only if the flag was
set or heartbeated at most that long ago.  The age is read from the key's
remaining TTL, so Redis's own clock judges it (no instance's clock is
involved).  Set it a little above the host's heartbeat interval; the flag
itself still lives ``ttl`` for anyone else reading it.
"""

from __future__ import annotations

import logging

from redis.asyncio import Redis

from ..errors import DeliveryError
from .redis_bridge import REDIS_DOWN

__all__ = ["RedisPresence"]

_log = logging.getLogger("extension_fsm.redis_presence")


class RedisPresence:
    """Online flags ``{prefix}online:{mitra_id}`` with a TTL of ``ttl`` seconds;
    online only while the last write is at most ``fresh_within`` seconds old
    (``None``: while the flag lives).

    Writes raise ``DeliveryError(retryable=True)`` when Redis is unreachable
    (the host's heartbeat simply tries again); :meth:`is_online` never raises.
    """

    def __init__(
        self,
        redis: Redis,
        *,
        prefix: str = "extension_fsm:",
        ttl: float = 30.0,
        fresh_within: float | None = None,
    ) -> None:
        if fresh_within is not None and not 0 < fresh_within <= ttl:
            raise ValueError(f"fresh_within must be > 0 and <= ttl ({ttl}), got {fresh_within}")
        self._redis = redis
        self._prefix = prefix
        self._ttl_ms = max(1, int(ttl * 1000))
        self._fresh_ms = None if fresh_within is None else int(fresh_within * 1000)

    def _key(self, mitra_id: str) -> str:
        return f"{self._prefix}online:{mitra_id}"

    async def set_online(self, mitra_id: str) -> None:
        """The mitra went online (start heartbeating)."""
        try:
            await self._redis.set(self._key(mitra_id), "1", px=self._ttl_ms)
        except REDIS_DOWN as err:
            raise DeliveryError(f"presence store unreachable: {err!r}", retryable=True) from err

    async def heartbeat(self, mitra_id: str) -> bool:
        """Keep an online mitra online; False if the flag had already expired or
        was cleared (then the host calls :meth:`set_online` again if the mitra
        is in fact online): a heartbeat never turns on a mitra who went offline."""
        try:
            return bool(await self._redis.set(self._key(mitra_id), "1", px=self._ttl_ms, xx=True))
        except REDIS_DOWN as err:
            raise DeliveryError(f"presence store unreachable: {err!r}", retryable=True) from err

    async def set_offline(self, mitra_id: str) -> None:
        """The mitra went offline."""
        try:
            await self._redis.delete(self._key(mitra_id))
        except REDIS_DOWN as err:
            raise DeliveryError(f"presence store unreachable: {err!r}", retryable=True) from err

    async def is_online(self, mitra_id: str) -> bool:
        """Whether the flag is set (and, with ``fresh_within``, written at most
        that long ago); an unreachable Redis answers False (fail safe)."""
        try:
            if self._fresh_ms is None:
                return bool(await self._redis.exists(self._key(mitra_id)))
            left = int(await self._redis.pttl(self._key(mitra_id)))
        except REDIS_DOWN as err:
            _log.warning("is_online: Redis unreachable, answering offline: %r", err)
            return False
        # -2: no flag; -1: a flag without a TTL, which these writes never leave
        return left >= 0 and self._ttl_ms - left <= self._fresh_ms
