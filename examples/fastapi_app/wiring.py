"""Build the library's ports from the settings, start and stop the background
loops.  Swap any piece for your own (your SQL tables, your token registry)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from extension_fsm import (
    DeliveryError,
    ExtensionService,
    Participant,
    PaymentConsumed,
    PaymentFailed,
    PushMessage,
    run_sweeper,
)
from extension_fsm.adapters.clock import AsyncioScheduler, SystemClock
from extension_fsm.adapters.config import StaticConfig
from extension_fsm.adapters.memory import (
    MemoryDeviceTokens,
    MemoryPresence,
    MemorySessionTimer,
    MemoryStore,
)
from extension_fsm.adapters.redis_bridge import RedisSocketBridge
from extension_fsm.adapters.redis_host import RedisDeviceTokens, RedisStreamSessionTimer
from extension_fsm.adapters.websocket import WebSocketHub
from extension_fsm.errors import StorageError
from extension_fsm.ports import InspectableStore, PushSender, SessionSockets, SessionTimer
from extension_fsm.sweeper import run_dispatcher

from .limits import SocketSlots
from .models import MAX_DEVICE_TOKENS
from .settings import Settings

__all__ = ["Runtime", "open_store", "start_runtime"]

_log = logging.getLogger("fastapi_app")


async def open_store(url: str) -> tuple[InspectableStore, Callable[[], Awaitable[None]]]:
    """The store and how to close it: SQL for a database URL, ``memory`` in memory."""
    if url == "memory":

        async def nothing() -> None:
            return None

        return MemoryStore(), nothing
    from extension_fsm.adapters.sqlalchemy import SqlAlchemyStore

    store = await SqlAlchemyStore.open(url, create_schema=True)
    return store, store.aclose


class LoggedPush:
    """Push is not configured (no ``EXTENSION_FSM_FCM_CREDENTIALS``): each push
    is logged in one line instead of sent.  Not a failure: the row counts as
    delivered, so a setup without push shows no dead rows after a good flow."""

    async def send(self, participant: Participant, user_id: str, message: PushMessage) -> None:
        _log.info("push not sent (not configured): %s %s: %s", participant, user_id, message.title)


class LoggedPaymentEvents:
    """The host's money side effects, here only logged: a real host records the
    earnings on ``consumed`` and refunds, releases and writes its failed-pairings
    audit row (tagged with ``event.cause``) on ``failed``.  Each event may come
    more than once: act once per ``event.dedupe_key``."""

    async def consumed(self, event: PaymentConsumed) -> None:
        _log.info(
            "payment consumed: %s for extension %s of session %s, amount %s (key %s)",
            event.payment_session_id,
            event.extension_id,
            event.session_id,
            event.amount,
            event.dedupe_key,
        )

    async def failed(self, event: PaymentFailed) -> None:
        _log.info(
            "payment failed: %s for extension %s of session %s, cause %s (key %s)",
            event.payment_session_id,
            event.extension_id,
            event.session_id,
            event.cause.value,
            event.dedupe_key,
        )


@dataclass
class Runtime:
    """Everything the routes use, built once per app."""

    settings: Settings
    store: InspectableStore
    service: ExtensionService
    hub: WebSocketHub
    sockets: SessionSockets
    presence: Any  # RedisPresence | MemoryPresence
    device_tokens: MemoryDeviceTokens | RedisDeviceTokens
    bridge: RedisSocketBridge | None = None
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    redis: Any = None  # the Redis client when configured (health checks)
    #: open WebSockets per user here, capped (``EXTENSION_FSM_MAX_SOCKETS_PER_USER``)
    socket_slots: SocketSlots = field(init=False)

    def __post_init__(self) -> None:
        self.socket_slots = SocketSlots(self.settings.max_sockets_per_user)

    async def register(self, ws: object, role: Participant, user_id: str, session_id: str) -> None:
        """A chat screen's socket opened."""
        if self.bridge is not None:
            await self.bridge.register(ws, role, user_id, session_id)
        else:
            self.hub.register(ws, role, user_id, session_id)
        if role is Participant.MITRA:
            await self.set_online(user_id, True)

    async def unregister(self, ws: object, role: Participant, user_id: str) -> None:
        """A chat screen's socket closed."""
        if self.bridge is not None:
            await self.bridge.unregister(ws)
        else:
            self.hub.unregister(ws)
        # Connected anywhere: with Redis, a socket on another instance keeps them online.
        if role is Participant.MITRA and not await self.sockets.is_connected(role, user_id):
            await self.set_online(user_id, False)

    async def register_device(self, role: Participant, user_id: str, token: str) -> None:
        """Keep ``token`` among the user's most recent ``MAX_DEVICE_TOKENS`` push
        tokens (in Redis when configured, so every instance and worker sees them)."""
        try:
            await self.device_tokens.register(role, user_id, token, keep=MAX_DEVICE_TOKENS)
        except DeliveryError as err:
            raise StorageError("device tokens unavailable", retryable=True) from err

    async def set_online(self, mitra_id: str, online: bool) -> None:
        """The example's stand-in for the mitra's online toggle: online while a socket is open."""
        try:
            if isinstance(self.presence, MemoryPresence):
                self.presence.online[mitra_id] = online
            elif online:
                await self.presence.set_online(mitra_id)
            else:
                await self.presence.set_offline(mitra_id)
        except DeliveryError:
            _log.warning("presence store unreachable; mitra %s reads as offline", mitra_id)

    async def heartbeat(self, mitra_id: str) -> None:
        """Keep a connected mitra online."""
        if not isinstance(self.presence, MemoryPresence):
            with contextlib.suppress(DeliveryError):
                if not await self.presence.heartbeat(mitra_id):
                    await self.presence.set_online(mitra_id)

    async def aclose(self) -> None:
        """Stop the loops, then close what was opened, newest first."""
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for close in reversed(self.closers):
            try:
                await close()
            except Exception:
                _log.exception("shutdown step failed")


async def start_runtime(settings: Settings) -> Runtime:
    """Open the store and the delivery adapters, start sweeper and dispatcher."""
    store, close_store = await open_store(settings.database_url)
    closers: list[Callable[[], Awaitable[None]]] = [close_store]
    hub = WebSocketHub()
    sockets: SessionSockets = hub
    presence: Any = MemoryPresence()
    bridge: RedisSocketBridge | None = None
    device_tokens: MemoryDeviceTokens | RedisDeviceTokens = MemoryDeviceTokens()
    session_timer: SessionTimer = MemorySessionTimer()
    if settings.redis_url:
        from redis.asyncio import Redis

        from extension_fsm.adapters.redis_presence import RedisPresence

        redis = Redis.from_url(settings.redis_url, socket_connect_timeout=2, socket_timeout=5)
        closers.append(redis.aclose)
        bridge = RedisSocketBridge(
            hub, redis, prefix=settings.redis_prefix, ttl=settings.socket_ttl
        )
        if not await bridge.start():
            _log.warning("Redis not reachable yet; sends are retried until it is")
        closers.append(bridge.aclose)
        sockets = bridge
        presence = RedisPresence(redis, prefix=settings.redis_prefix, ttl=settings.presence_ttl)
        # Shared by every instance (and a separate worker): the push tokens, and
        # the session-timer commands as a stream the host's timer service consumes.
        device_tokens = RedisDeviceTokens(redis, prefix=settings.redis_prefix)
        session_timer = RedisStreamSessionTimer(redis, prefix=settings.redis_prefix)
    push: PushSender = LoggedPush()
    if not settings.fcm_credentials_file:
        _log.warning(
            "push is not configured (EXTENSION_FSM_FCM_CREDENTIALS is unset): "
            "pushes are logged, not sent"
        )
    else:
        import firebase_admin  # type: ignore[import-untyped]
        from firebase_admin import credentials

        from extension_fsm.adapters.fcm import FcmPushSender

        cred = credentials.Certificate(settings.fcm_credentials_file)
        app = firebase_admin.initialize_app(cred, name=f"extension-fsm-{uuid.uuid4().hex}")

        async def delete_app() -> None:
            # delete_app runs asyncio.run() inside: keep it off this loop
            await asyncio.to_thread(firebase_admin.delete_app, app)

        closers.append(delete_app)
        push = FcmPushSender(app, device_tokens, endpoint=settings.fcm_endpoint)

    clock = SystemClock()
    scheduler = AsyncioScheduler(clock)
    closers.append(scheduler.aclose)
    service = ExtensionService(
        store,
        clock=clock,
        config=StaticConfig(
            settings.timeout_seconds, settings.timeout_action, settings.grace_seconds
        ),
        sockets=sockets,
        presence=presence,
        push=push,
        session_timer=session_timer,
        payment_events=LoggedPaymentEvents(),
        scheduler=scheduler,
    )
    # At shutdown: stop the calls' background deliveries (their rows stay in the outbox).
    closers.append(service.aclose)
    runtime = Runtime(
        settings, store, service, hub, sockets, presence, device_tokens, bridge, closers
    )
    runtime.redis = redis if settings.redis_url else None
    # Per worker: one task running two loops, the sweep of due extensions and the
    # delivery of due outbox rows (a slow push provider never delays a deadline).
    # An instance that does not sweep still delivers (its calls' rows, retries).
    loops = run_sweeper if settings.sweep else run_dispatcher
    runtime.tasks.append(asyncio.create_task(loops(service, settings.sweep_interval)))
    return runtime
