"""The example's settings, from the environment, validated at start.

:meth:`Settings.from_env` builds a dict from the ``EXTENSION_FSM_*`` variables
and lets pydantic check it: a bad value stops the app at start with one line
naming the variable (``EXTENSION_FSM_TIMEOUT_SECONDS='ten': ...``), never a
raw ``ValueError`` from deep inside the wiring.  An unknown timeout action is
not an error: like the service it replaces, the library treats anything but
``auto_reject`` as ``auto_approve``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .auth import MIN_SECRET_BYTES

__all__ = ["DEV_TIMEOUT_SECONDS", "ENV", "OneLineSettingsErrors", "Settings", "SettingsError"]

#: the answer window with ``EXTENSION_FSM_DEV_SEED`` and no ``EXTENSION_FSM_TIMEOUT_SECONDS``
DEV_TIMEOUT_SECONDS = 60

#: each setting's environment variable
ENV = {
    "jwt_secret": "EXTENSION_FSM_JWT_SECRET",
    "database_url": "EXTENSION_FSM_DATABASE_URL",
    "redis_url": "EXTENSION_FSM_REDIS_URL",
    "redis_prefix": "EXTENSION_FSM_REDIS_PREFIX",
    "fcm_credentials_file": "EXTENSION_FSM_FCM_CREDENTIALS",
    "fcm_endpoint": "EXTENSION_FSM_FCM_ENDPOINT",
    "timeout_seconds": "EXTENSION_FSM_TIMEOUT_SECONDS",
    "timeout_action": "EXTENSION_FSM_TIMEOUT_ACTION",
    "grace_seconds": "EXTENSION_FSM_GRACE_SECONDS",
    "health_max_lag": "EXTENSION_FSM_HEALTH_MAX_LAG",
    "sweep_interval": "EXTENSION_FSM_SWEEP_INTERVAL",
    "sweep": "EXTENSION_FSM_SWEEP",
    "presence_ttl": "EXTENSION_FSM_PRESENCE_TTL",
    "socket_ttl": "EXTENSION_FSM_SOCKET_TTL",
    "token_check_seconds": "EXTENSION_FSM_TOKEN_CHECK_SECONDS",
    "dev_seed": "EXTENSION_FSM_DEV_SEED",
    "max_body_bytes": "EXTENSION_FSM_MAX_BODY_BYTES",
    "max_sockets_per_user": "EXTENSION_FSM_MAX_SOCKETS_PER_USER",
}


class SettingsError(ValueError):
    """A setting is unusable: one line naming its environment variable."""


class Settings(BaseModel):
    """Everything the example reads from its environment."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    jwt_secret: str
    #: SQLAlchemy URL (default: embedded SQLite in memory); "memory" = the
    #: in-memory store (one process, lost on restart)
    database_url: str = Field("sqlite://", min_length=1)
    #: None = one instance, sockets and presence in this process only
    redis_url: str | None = None
    redis_prefix: str = "extension_fsm:"
    #: service-account JSON file; None = no push (rows for push end dead, logged)
    fcm_credentials_file: str | None = None
    #: replaces https://fcm.googleapis.com (a local FCM fake or emulator)
    fcm_endpoint: str | None = None
    #: the mitra's answer window, seconds (from the environment with the dev
    #: seed on and no value given: DEV_TIMEOUT_SECONDS)
    timeout_seconds: int = Field(10, gt=0)
    #: "auto_reject", or anything else for auto_approve (the seed's rule)
    timeout_action: str = "auto_approve"
    #: closure grace after a refusal, seconds
    grace_seconds: int = Field(60, ge=0)
    #: seconds between two sweeps of due extensions (every instance sweeps)
    sweep_interval: float = Field(1.0, gt=0)
    #: whether this instance sweeps due extensions (outbox delivery runs
    #: either way); with several instances, one sweeping is enough
    sweep: bool = True
    #: with Redis: a mitra's online flag lapses after this many seconds
    #: without a heartbeat (any frame on their socket)
    presence_ttl: float = Field(30.0, gt=0)
    #: with Redis: an instance's socket-registry entries lapse after this many
    #: seconds without its heartbeat (a crashed instance's sockets drop out)
    socket_ttl: float = Field(30.0, gt=0)
    #: an open WebSocket's token expiry is checked at least this often, seconds;
    #: a socket whose token expired is closed with code 4401
    token_check_seconds: float = Field(5.0, gt=0, le=300)
    #: /healthz fails when the oldest due extension waits longer, seconds
    health_max_lag: float = Field(30.0, gt=0)
    #: seed a demo session + payment at start-up and log tokens (never in production)
    dev_seed: bool = False
    #: a request body over this many bytes is refused (413) before it is read
    max_body_bytes: int = Field(16384, gt=0, le=1048576)
    #: open WebSockets per user on one instance; one more is closed with 4429
    max_sockets_per_user: int = Field(8, gt=0)

    @field_validator("jwt_secret")
    @classmethod
    def _long_enough(cls, secret: str) -> str:
        if len(secret.encode()) < MIN_SECRET_BYTES:
            raise ValueError(f"must be at least {MIN_SECRET_BYTES} bytes")
        return secret

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read ``EXTENSION_FSM_*`` variables (``env``, default ``os.environ``).

        The JWT secret is required; an unset or empty variable takes the
        default (the answer window's is :data:`DEV_TIMEOUT_SECONDS` with the dev
        seed on); any other bad value raises :class:`SettingsError`.
        """
        env = os.environ if env is None else env
        if not env.get(ENV["jwt_secret"]):
            raise SettingsError(
                f"{ENV['jwt_secret']} is not set: give it {MIN_SECRET_BYTES}+ random bytes"
            )
        values = {field: env[var] for field, var in ENV.items() if env.get(var)}
        settings = cls.validated(values)
        if settings.dev_seed and "timeout_seconds" not in values:
            # by hand: long enough to read the request and type the answer
            settings = settings.model_copy(update={"timeout_seconds": DEV_TIMEOUT_SECONDS})
        return settings

    @classmethod
    def validated(cls, values: Mapping[str, object]) -> Settings:
        """``Settings(**values)``, a failure said in one line naming the variable."""
        try:
            return cls.model_validate(dict(values))
        except ValidationError as err:
            first = err.errors()[0]
            field = str(first["loc"][0]) if first["loc"] else "?"
            name = ENV.get(field, field)
            shown = "(hidden)" if field == "jwt_secret" else repr(values.get(field))
            message = first["msg"].removeprefix("Value error, ")
            raise SettingsError(f"{name}={shown}: {message}") from None


_Scope = MutableMapping[str, Any]
_Message = MutableMapping[str, Any]
_Receive = Callable[[], Awaitable[_Message]]
_Send = Callable[[_Message], Awaitable[None]]


class OneLineSettingsErrors:
    """ASGI middleware: a :class:`SettingsError` at start-up reaches the server
    as its one line, not as a traceback (``uvicorn`` prints what the app says
    when its start-up failed: by default the whole traceback)."""

    def __init__(self, app: Callable[[_Scope, _Receive, _Send], Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: _Scope, receive: _Receive, send: _Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def say_one_line(message: _Message) -> None:
            failure = sys.exc_info()[1]  # the error the start-up is failing with
            if message["type"] == "lifespan.startup.failed" and isinstance(failure, SettingsError):
                message = {**message, "message": str(failure)}
            await send(message)

        await self.app(scope, receive, say_one_line)
