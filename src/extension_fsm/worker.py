"""``extension-fsm worker``: the sweep and the outbox dispatcher as one process.

Two independent asyncio loops over one store: the **sweep** resolves pending
extensions past their deadline (``service.sweep_due()``), the **dispatch**
delivers due outbox rows (``service.dispatcher.dispatch_due()``).  The sweep
never delivers anything itself: its decisions' rows wait in the outbox for
the dispatch loop (woken at once), so a hung socket or push service never
delays a deadline.  A third, slow loop reads the counts
(:mod:`extension_fsm.operator_status`) into the gauges of :mod:`extension_fsm.metrics`.

Deadlines are data in the database; the loops poll them (no scheduler of our
own).  Any number of replicas may run: the store claims due extensions and
outbox rows with ``FOR UPDATE SKIP LOCKED`` (PostgreSQL) or the single write
lock (SQLite file).  SIGTERM or SIGINT: each loop finishes the step it is in
and the process exits 0; a step still running after ``shutdown_timeout`` is
cancelled (its transaction rolls back; an outbox row in flight is delivered
again after its lease: at least once).

Delivery: ``redis_url`` gives the cross-instance socket bridge, mitra
presence, the push-token registry and (``session_timer="redis"``, the
default with Redis) the session-timer stream of
:mod:`extension_fsm.adapters.redis_host`; ``fcm_credentials`` enables push.
Without Redis no socket is reachable (every notice falls back to push), a
mitra never reads as connected (so an auto-approve deadline safely rejects),
and session-timer rows are marked dead with the reason, for
``extension-fsm outbox retry-dead`` once a timer is configured.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from . import metrics
from .errors import DeliveryError
from .logs import configure_logging
from .loop import run_every
from .model import Participant, PushMessage, TimeoutAction
from .outbox import DispatchReport, OutboxDispatcher

__all__ = ["ConfigError", "WorkerConfig", "configure_logging", "run_worker"]

_log = logging.getLogger("extension_fsm.worker")
_TIMER_CHOICES = ("redis", "none")


class ConfigError(Exception):
    """The worker's configuration is unusable (one line, said at start)."""


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """Everything the worker runs with (the CLI fills it from flags and environment)."""

    db: str
    table_prefix: str = ""
    layout: str = "default"
    redis_url: str | None = None
    redis_prefix: str = "extension_fsm:"
    fcm_credentials: str | None = None
    fcm_endpoint: str | None = None
    #: "redis" (the stream, needs redis_url) or "none"; None = redis when redis_url is set
    session_timer: str | None = None
    timeout_action: str = "auto_approve"
    grace_seconds: int = 60
    sweep_interval: float = 1.0
    dispatch_interval: float = 1.0
    status_interval: float = 15.0
    batch: int = 100
    shutdown_timeout: float = 10.0

    @property
    def timer(self) -> str:
        """The session-timer choice, the default resolved."""
        if self.session_timer is not None:
            return self.session_timer
        return "redis" if self.redis_url else "none"

    def validate(self) -> None:
        """Raise :class:`ConfigError` for the first thing that cannot work."""
        scheme = self.db.split(":", 1)[0].split("+", 1)[0]
        if scheme not in ("sqlite", "postgresql", "postgres"):
            raise ConfigError(f"--db {self.db!r}: use sqlite:///file.db or postgresql://…")
        if scheme == "sqlite" and self.db.split("?", 1)[0] in ("sqlite://", "sqlite:///:memory:"):
            raise ConfigError("--db: an in-memory SQLite database is private to one process")
        _need("sqlalchemy", "sql", "--db")
        if scheme != "sqlite":
            _need("asyncpg", "postgres", "--db postgresql://…")
        if self.timer not in _TIMER_CHOICES:
            raise ConfigError(f"--session-timer {self.timer!r}: choose redis or none")
        if self.timer == "redis" and not self.redis_url:
            raise ConfigError("--session-timer redis needs --redis URL")
        if self.redis_url:
            if not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
                raise ConfigError(f"--redis {self.redis_url!r}: use redis://host:port/db")
            _need("redis", "redis", "--redis")
        if self.fcm_credentials:
            if not self.redis_url:
                raise ConfigError("--fcm-credentials needs --redis URL (the push-token registry)")
            if not os.path.isfile(self.fcm_credentials):
                raise ConfigError(f"--fcm-credentials {self.fcm_credentials}: no such file")
            _need("firebase_admin", "fcm", "--fcm-credentials")
        if self.timeout_action not in {a.value for a in TimeoutAction}:
            choices = ", ".join(a.value for a in TimeoutAction)
            raise ConfigError(f"--timeout-action {self.timeout_action!r}: one of {choices}")
        for name in ("sweep_interval", "dispatch_interval", "status_interval", "shutdown_timeout"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be > 0")
        if self.batch < 1 or self.grace_seconds < 0:
            raise ConfigError("--batch must be >= 1 and --grace-seconds >= 0")


def _need(module: str, extra: str, flag: str) -> None:
    try:
        __import__(module)
    except ImportError:
        raise ConfigError(f"{flag} needs pip install 'extension-fsm[{extra}]'") from None


def _info(msg: str, **fields: Any) -> None:
    _log.info(msg, extra={"fields": fields})


# -------------------------------------------------------------- the adapters


class _SweepDispatcher(OutboxDispatcher):
    """The sweep's dispatcher: commits leave their rows to the dispatch loop."""

    def __init__(self, wake: Callable[[], None], *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._wake = wake

    async def deliver(self, ids: Sequence[str]) -> DispatchReport:
        if ids:
            self._wake()
        return DispatchReport()


class _NoSockets:
    """No socket bridge: nobody is reachable by socket, so push takes over."""

    async def send(self, session_id: str, recipient: Participant, message: Any) -> bool:
        return False

    async def is_connected(self, participant: Participant, user_id: str) -> bool:
        return False


class _Offline:
    async def is_online(self, mitra_id: str) -> bool:
        return False


class _Refuse:
    """A delivery this worker is not configured for: the row ends dead, with why."""

    def __init__(self, why: str) -> None:
        self._why = why

    async def send(self, participant: Participant, user_id: str, message: PushMessage) -> None:
        raise DeliveryError(self._why, retryable=False)

    async def expiry_extended(self, session_id: str, expires_at: datetime, *, seq: int) -> None:
        raise DeliveryError(self._why, retryable=False)

    async def start_closure_grace(self, session_id: str, deadline: datetime, *, seq: int) -> None:
        raise DeliveryError(self._why, retryable=False)

    async def clear_closure_grace(self, session_id: str, *, seq: int) -> None:
        raise DeliveryError(self._why, retryable=False)


@dataclass
class _Ports:
    sockets: Any = field(default_factory=_NoSockets)
    presence: Any = field(default_factory=_Offline)
    push: Any = field(default_factory=lambda: _Refuse("push is not configured (--fcm-credentials)"))
    timer: Any = field(
        default_factory=lambda: _Refuse("no session timer in the worker (--session-timer redis)")
    )
    closers: list[Callable[[], Awaitable[Any]]] = field(default_factory=list)

    async def aclose(self) -> None:
        for close in reversed(self.closers):
            with contextlib.suppress(Exception):
                await close()


async def _open_ports(cfg: WorkerConfig) -> _Ports:
    ports = _Ports()
    if not cfg.redis_url:
        return ports
    from redis.asyncio import Redis

    from .adapters.redis_bridge import RedisSocketBridge
    from .adapters.redis_host import RedisDeviceTokens, RedisStreamSessionTimer
    from .adapters.redis_presence import RedisPresence
    from .adapters.websocket import WebSocketHub

    redis = Redis.from_url(cfg.redis_url, socket_connect_timeout=2, socket_timeout=5)
    ports.closers.append(redis.aclose)
    bridge = RedisSocketBridge(WebSocketHub(), redis, prefix=cfg.redis_prefix)
    if not await bridge.start():
        _log.warning("Redis not reachable yet; sends are retried until it is")
    ports.closers.append(bridge.aclose)
    ports.sockets = bridge
    ports.presence = RedisPresence(redis, prefix=cfg.redis_prefix)
    if cfg.timer == "redis":
        ports.timer = RedisStreamSessionTimer(redis, prefix=cfg.redis_prefix)
    if cfg.fcm_credentials:
        import firebase_admin  # type: ignore[import-untyped]
        from firebase_admin import credentials

        from .adapters.fcm import FcmPushSender

        app = firebase_admin.initialize_app(
            credentials.Certificate(cfg.fcm_credentials), name=f"efsm-worker-{uuid.uuid4().hex}"
        )
        ports.closers.append(lambda: asyncio.to_thread(firebase_admin.delete_app, app))
        tokens = RedisDeviceTokens(redis, prefix=cfg.redis_prefix)
        ports.push = FcmPushSender(app, tokens, endpoint=cfg.fcm_endpoint)
    return ports


# ------------------------------------------------------------------ the loops


async def run_worker(cfg: WorkerConfig, stop: asyncio.Event | None = None) -> int:
    """Run until SIGTERM / SIGINT (or ``stop``); 0 on a clean stop, 1 when the
    database cannot be used at start.  ``cfg`` must be valid (:meth:`WorkerConfig.validate`)."""
    from .adapters.clock import SystemClock
    from .adapters.config import StaticConfig
    from .adapters.sqlalchemy import SqlAlchemyStore
    from .operator_status import collect_status, missing_tables
    from .service import ExtensionService

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    try:
        store = await SqlAlchemyStore.open(cfg.db, table_prefix=cfg.table_prefix, layout=cfg.layout)
    except Exception as err:
        _log.error("cannot open the database: %s: %s", type(err).__name__, err)
        return 1
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    ports: _Ports | None = None
    try:
        try:
            missing = await missing_tables(store)
        except Exception as err:
            _log.error("cannot reach the database: %s: %s", type(err).__name__, err)
            return 1
        if missing:
            _log.error(
                "the database is not migrated (missing %s): run extension-fsm db upgrade --db URL",
                ", ".join(missing),
            )
            return 1
        ports = await _open_ports(cfg)
        clock = SystemClock()
        kick = asyncio.Event()
        common: dict[str, Any] = {
            "clock": clock,
            "sockets": ports.sockets,
            "push": ports.push,
            "session_timer": ports.timer,
        }
        service = ExtensionService(
            store,
            config=StaticConfig(timeout_action=cfg.timeout_action, grace_seconds=cfg.grace_seconds),
            presence=ports.presence,
            dispatcher=_SweepDispatcher(kick.set, store.outbox, **common),
            sweep_batch=cfg.batch,
            **common,
        )
        dispatcher = OutboxDispatcher(store.outbox, **common)

        async def sweep() -> bool:
            started = time.monotonic()
            resolved = await service.sweep_due()
            if resolved:
                counts: dict[str, int] = {}
                for ext in resolved:
                    counts[str(ext.status)] = counts.get(str(ext.status), 0) + 1
                _info(
                    "swept",
                    resolved=len(resolved),
                    **counts,
                    seconds=round(time.monotonic() - started, 3),
                )
            return False  # sweep_due drains every due batch

        async def dispatch() -> bool:
            report = await dispatcher.dispatch_due(cfg.batch)
            total = report.delivered + report.retried + report.dead
            if total:
                _info(
                    "dispatched",
                    delivered=report.delivered,
                    retried=report.retried,
                    dead=report.dead,
                )
            return total >= cfg.batch

        async def observe() -> bool:
            doc = await collect_status(store)
            metrics.record_status(doc)
            return False

        _info(
            "worker started",
            db=_redact(cfg.db),
            redis=bool(cfg.redis_url),
            push=bool(cfg.fcm_credentials),
            session_timer=cfg.timer,
            pid=os.getpid(),
        )
        tasks = [
            asyncio.create_task(run_every("sweep", sweep, cfg.sweep_interval, stop=stop, log=_log)),
            asyncio.create_task(
                run_every(
                    "dispatch", dispatch, cfg.dispatch_interval, stop=stop, wake=kick, log=_log
                )
            ),
            asyncio.create_task(
                run_every("status", observe, cfg.status_interval, stop=stop, log=_log)
            ),
        ]
        await stop.wait()
        _info("stopping", shutdown_timeout=cfg.shutdown_timeout)
        _, late = await asyncio.wait(tasks, timeout=cfg.shutdown_timeout)
        for task in late:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        _info("worker stopped", cancelled=len(late))
        return 0
    finally:
        if ports is not None:
            await ports.aclose()
        await store.aclose()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)


def _redact(url: str) -> str:
    """``url`` without its password."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1]
