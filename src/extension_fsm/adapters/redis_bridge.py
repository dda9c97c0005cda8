"""Reach a socket wherever it lives: the :class:`~extension_fsm.ports.SessionSockets`
port across backend instances, over Redis / Valkey.

Design (request / ack over pub/sub, steered by a registry):

* **Registry.**  Each instance writes, for every key its hub holds (a chat
  screen ``(session, participant)`` or a user), its instance id into a sorted
  set scored by an expiry time: ``{prefix}sock:s:{session}:{participant}`` and
  ``{prefix}sock:u:{participant}:{user}``.  A heartbeat re-scores them every
  ``ttl / 3`` seconds, so a crashed instance's sockets drop out of the
  registry by themselves within ``ttl``.
* **Send.**  The local hub is tried first; then every other live instance in
  the session key's registry is asked over its own channel
  ``{prefix}inst:{id}`` and answers on the sender's channel whether one of its
  sockets took the message.  The wait is bounded by ``ack_timeout``; an
  instance that does not answer in time counts as "not taken" (the outbox then
  falls back to push, and ``dedupe_key`` lets the app drop a repeat).  An
  instance in the registry that nobody listens for (its channel has no
  subscriber: it crashed, or it is cut off from Redis) makes the send raise
  :class:`~extension_fsm.errors.SocketUnreachable` unless another socket took
  it: the outbox pushes instead if the message has a push, else retries, until
  that instance listens again or its registry entry lapses after ``ttl``.
* **Connected anywhere** = the local hub, else a *live answer*: every other
  instance the user key's registry names is asked over its channel whether
  its hub holds a socket of that user right now, and one "yes" within
  ``ack_timeout`` is the answer.  A registry entry alone is never taken as
  proof (it outlives a crashed instance by up to ``ttl``): an instance that
  was killed has no subscriber on its channel and counts as "no" at once; one
  that is frozen or cut off does not answer and counts as "no" after
  ``ack_timeout``.  So an auto-approval rests on evidence at most
  ``ack_timeout`` (bounded again by the service's ``presence_timeout``) old
  when asked, plus the pass's own work until its commit.

Failures at the edge: a Redis ``ConnectionError`` / ``TimeoutError`` during a
send becomes ``DeliveryError(retryable=True)``, unless a local socket already
took the message: the socket layer cannot say whether the recipient got it,
so the outbox pushes at once when the message has a push and keeps the row
for a retry when it has none.  During ``is_connected`` it means *not
connected*.  Every Redis call of a send or an ``is_connected``
is bounded by ``redis_timeout`` (a blackholed Redis is "unreachable", not a
hang), so a send takes at most the hub's send timeout, plus twice
``redis_timeout``, plus ``ack_timeout`` (fail safe: the timeout safeguard then refuses to
auto-approve).  Registry writes that fail are logged and healed by the next
heartbeat.  Instances' clocks are assumed NTP-close (seconds, against a
``ttl`` of tens of seconds).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self

from redis import exceptions as redis_errors
from redis.asyncio import Redis

from ..errors import DeliveryError, SocketUnreachable
from ..model import JSONValue, Participant
from .websocket import SessionKey, SocketKey, UserKey, WebSocketHub

__all__ = ["RedisSocketBridge"]

_log = logging.getLogger("extension_fsm.redis_bridge")

#: what "Redis is unreachable" looks like from redis-py
REDIS_DOWN: tuple[type[Exception], ...] = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    OSError,
)


class RedisSocketBridge:
    """A :class:`WebSocketHub` plus Redis, so sends and presence span instances.

    Register sockets through the bridge (``await bridge.register(ws, ...)``) so
    the registry learns of them; run ``await bridge.start()`` once (or use
    ``async with``) and ``await bridge.aclose()`` at shutdown.
    """

    def __init__(
        self,
        hub: WebSocketHub,
        redis: Redis,
        *,
        prefix: str = "extension_fsm:",
        instance_id: str | None = None,
        ttl: float = 30.0,
        ack_timeout: float = 1.0,
        redis_timeout: float = 1.0,
    ) -> None:
        if not redis_timeout > 0:
            raise ValueError(f"redis_timeout must be positive, got {redis_timeout}")
        self.hub = hub
        self.instance_id = instance_id or uuid.uuid4().hex
        self._redis = redis
        self._prefix = prefix
        self._ttl = ttl
        self._ack_timeout = ack_timeout
        self._redis_timeout = redis_timeout
        self._pending: dict[str, asyncio.Future[bool]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._listener: asyncio.Task[None] | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        hub.on_vacated(self._vacated)

    # ----------------------------------------------------------- lifecycle

    async def start(self, *, ready_timeout: float = 5.0) -> bool:
        """Start listening and heartbeating; say whether the subscription is live.

        Never raises for an unreachable Redis: the bridge keeps trying and
        sends fail retryably until it is back.
        """
        if self._listener is None:
            self._listener = asyncio.create_task(self._listen(), name="redis-bridge-listen")
            self._heartbeat = asyncio.create_task(self._beat(), name="redis-bridge-heartbeat")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(ready_timeout):
                await self._subscribed.wait()
        return self._subscribed.is_set()

    async def aclose(self, *, forget: bool = True) -> None:
        """Stop; with ``forget`` remove this instance's registry entries now
        (without, they expire after ``ttl``, as after a crash)."""
        for task in (self._listener, self._heartbeat, *self._tasks):
            if task is not None:
                task.cancel()
        for task in (self._listener, self._heartbeat, *self._tasks):
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._listener = self._heartbeat = None
        for future in self._pending.values():
            future.cancel()
        self._pending.clear()
        if forget:
            with contextlib.suppress(*REDIS_DOWN):
                for key in self.hub.held_keys():
                    await self._redis.zrem(self._registry(key), self.instance_id)

    @property
    def is_live(self) -> bool:
        """Whether the pub/sub subscription is up (answers can reach this instance)."""
        return self._subscribed.is_set()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # ------------------------------------------------------------- sockets

    async def register(
        self,
        socket: object,
        participant: Participant,
        user_id: str,
        session_id: str | None = None,
    ) -> None:
        """Add a socket here and announce it in the registry."""
        keys = self.hub.register(socket, participant, user_id, session_id)
        try:
            await self._announce(keys)
        except REDIS_DOWN as err:  # local delivery still works; the heartbeat retries
            _log.warning("registry write failed, the heartbeat will retry: %r", err)

    async def unregister(self, socket: object) -> None:
        """Remove a socket (its vacated keys leave the registry)."""
        for key in self.hub.unregister(socket):
            await self._forget(key)

    # ------------------------------------------------- SessionSockets port

    async def send(
        self, session_id: str, participant: Participant, message: Mapping[str, JSONValue]
    ) -> bool:
        """Whether a socket of ``participant`` on the session, on any instance, took it."""
        taken = await self.hub.send(session_id, participant, message)
        key = SessionKey(session_id, participant)
        try:
            holders = await self._holders(key)
            others = [h for h in holders if h != self.instance_id]
            if others and not self._subscribed.is_set():
                # Without our subscription no answer can reach us: we could
                # not tell a taken message from a lost one.
                raise redis_errors.ConnectionError("pub/sub link down; cannot hear acks")
            answers = await asyncio.gather(*(self._ask(h, key, message) for h in others))
        except REDIS_DOWN as err:
            if taken:
                _log.warning("sent locally; other instances unreachable: %r", err)
                return True
            raise DeliveryError(f"Redis unreachable: {err!r}", retryable=True) from err
        if taken or any(answer is True for answer in answers):
            return True
        if any(answer is None for answer in answers):
            raise SocketUnreachable(
                f"a {participant.value} socket of session {session_id} is on an instance"
                " that is not listening (crashed, or cut off from Redis)"
            )
        return False

    async def is_connected(self, participant: Participant, user_id: str) -> bool:
        """Whether the user has a socket on this instance, or another instance
        answers, now, that it holds one (a live answer within ``ack_timeout``,
        never the registry alone); unreachable Redis, or no way to hear the
        answers, means no."""
        if await self.hub.is_connected(participant, user_id):
            return True
        key = UserKey(participant, user_id)
        try:
            others = [h for h in await self._holders(key) if h != self.instance_id]
            if not others or not self._subscribed.is_set():
                return False  # nobody to ask, or no way to hear an answer
            answers = await asyncio.gather(*(self._ask_holds(h, key) for h in others))
        except REDIS_DOWN as err:
            _log.warning("is_connected: Redis unreachable, answering not connected: %r", err)
            return False
        return any(answer is True for answer in answers)

    # ------------------------------------------------------------ internals

    def _registry(self, key: SocketKey) -> str:
        if isinstance(key, SessionKey):
            return f"{self._prefix}sock:s:{key.session_id}:{key.participant.value}"
        return f"{self._prefix}sock:u:{key.participant.value}:{key.user_id}"

    def _channel(self, instance_id: str) -> str:
        return f"{self._prefix}inst:{instance_id}"

    async def _holders(self, key: SocketKey) -> list[str]:
        # A timeout here is a TimeoutError (an OSError): "Redis unreachable".
        async with asyncio.timeout(self._redis_timeout):
            raw = await self._redis.zrangebyscore(self._registry(key), time.time(), "+inf")
        return [_text(member) for member in raw if isinstance(member, bytes | str)]

    async def _announce(self, keys: list[SocketKey]) -> None:
        if not keys:
            return
        now = time.time()
        async with self._redis.pipeline(transaction=False) as pipe:
            for key in keys:
                name = self._registry(key)
                pipe.zadd(name, {self.instance_id: now + self._ttl})
                pipe.zremrangebyscore(name, "-inf", now)
                pipe.expire(name, int(self._ttl * 2) + 1)
            await pipe.execute()

    async def _forget(self, key: SocketKey) -> None:
        try:
            await self._redis.zrem(self._registry(key), self.instance_id)
        except REDIS_DOWN as err:  # the entry expires after ttl anyway
            _log.warning("registry removal failed: %r", err)

    def _vacated(self, key: SocketKey) -> None:
        # A socket the hub dropped on a failed send: forget it in the background.
        self._spawn(self._forget(key))

    def _spawn(self, coro: Any) -> None:
        try:
            task = asyncio.get_running_loop().create_task(coro)
        except RuntimeError:  # no loop (shutdown): the entry expires by itself
            coro.close()
            return
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _ask(
        self, instance_id: str, key: SessionKey, message: Mapping[str, JSONValue]
    ) -> bool | None:
        """Whether ``instance_id``'s socket took it; None when nobody listens on its
        channel (crashed, or cut off from Redis: its registry entry lapses after
        ``ttl`` if it does not come back)."""
        payload = {
            "op": "send",
            "reply_to": self.instance_id,
            "session_id": key.session_id,
            "participant": key.participant.value,
            "message": dict(message),
        }
        return await self._request(instance_id, payload)

    async def _ask_holds(self, instance_id: str, key: UserKey) -> bool:
        """Whether ``instance_id`` answers, within ``ack_timeout``, that its hub
        holds a socket of ``key``'s user; nobody listening or no answer is no."""
        payload = {
            "op": "holds",
            "reply_to": self.instance_id,
            "participant": key.participant.value,
            "user_id": key.user_id,
        }
        return await self._request(instance_id, payload) is True

    async def _request(self, instance_id: str, payload: dict[str, Any]) -> bool | None:
        """Publish ``payload`` (given an ``id``) to ``instance_id`` and wait for its
        answer: the answer, False after ``ack_timeout``, None when nobody listens."""
        request_id = uuid.uuid4().hex
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            async with asyncio.timeout(self._redis_timeout):
                receivers = await self._redis.publish(
                    self._channel(instance_id), json.dumps({**payload, "id": request_id})
                )
                if receivers == 0:
                    return None
            async with asyncio.timeout(self._ack_timeout):
                return await future
        except TimeoutError:
            _log.warning("instance %s did not answer within %ss", instance_id, self._ack_timeout)
            return False
        finally:
            self._pending.pop(request_id, None)

    async def _listen(self) -> None:
        backoff = 0.1
        while True:
            try:
                async with self._redis.pubsub() as pubsub:
                    await pubsub.subscribe(self._channel(self.instance_id))
                    async for item in pubsub.listen():
                        if item["type"] == "subscribe":
                            self._subscribed.set()
                            backoff = 0.1
                        elif item["type"] == "message":
                            self._on_message(_text(item["data"]))
            except REDIS_DOWN as err:
                self._subscribed.clear()
                _log.warning("pub/sub link lost, reconnecting in %.1fs: %r", backoff, err)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    def _on_message(self, raw: str) -> None:
        try:
            payload = json.loads(raw)
            if payload["op"] == "ack":
                future = self._pending.get(payload["id"])
                if future is not None and not future.done():
                    future.set_result(bool(payload["taken"]))
            elif payload["op"] == "send":
                self._spawn(self._serve(payload))
            elif payload["op"] == "holds":
                self._spawn(self._serve_holds(payload))
        except (ValueError, KeyError, TypeError) as err:
            _log.warning("ignoring a malformed bridge message: %r", err)

    async def _serve(self, payload: dict[str, Any]) -> None:
        taken = await self.hub.send(
            str(payload["session_id"]), Participant(payload["participant"]), payload["message"]
        )
        await self._answer(payload, taken)

    async def _serve_holds(self, payload: dict[str, Any]) -> None:
        held = await self.hub.is_connected(
            Participant(payload["participant"]), str(payload["user_id"])
        )
        await self._answer(payload, held)

    async def _answer(self, payload: dict[str, Any], taken: bool) -> None:
        answer = {"op": "ack", "id": payload["id"], "taken": taken}
        try:
            await self._redis.publish(self._channel(str(payload["reply_to"])), json.dumps(answer))
        except REDIS_DOWN as err:
            _log.warning("could not answer a bridged request: %r", err)

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self._ttl / 3)
            try:
                await self._announce(self.hub.held_keys())
            except REDIS_DOWN as err:
                _log.warning("registry heartbeat failed: %r", err)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
