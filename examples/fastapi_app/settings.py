"""The example's settings, from the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass

from .auth import MIN_SECRET_BYTES

__all__ = ["Settings"]


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the example reads from its environment."""

    jwt_secret: str
    #: SQLAlchemy URL; None = in-memory store (one process, lost on restart)
    database_url: str | None = None
    #: None = one instance, sockets and presence in this process only
    redis_url: str | None = None
    redis_prefix: str = "extension_fsm:"
    #: service-account JSON file; None = no push (rows for push end dead, logged)
    fcm_credentials_file: str | None = None
    #: replaces https://fcm.googleapis.com (a local FCM fake or emulator)
    fcm_endpoint: str | None = None
    timeout_seconds: int = 10
    timeout_action: str = "auto_approve"
    grace_seconds: int = 60
    sweep_interval: float = 1.0
    presence_ttl: float = 30.0
    #: seed a demo session + payment at start-up and log tokens (never in production)
    dev_seed: bool = False

    def __post_init__(self) -> None:
        if len(self.jwt_secret.encode()) < MIN_SECRET_BYTES:
            raise ValueError(f"EXTENSION_FSM_JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes")

    @classmethod
    def from_env(cls) -> Settings:
        """Read ``EXTENSION_FSM_*`` variables; the JWT secret is required."""
        env = os.environ
        secret = env.get("EXTENSION_FSM_JWT_SECRET")
        if not secret:
            raise RuntimeError("set EXTENSION_FSM_JWT_SECRET (32+ random bytes)")
        return cls(
            jwt_secret=secret,
            database_url=env.get("EXTENSION_FSM_DATABASE_URL") or None,
            redis_url=env.get("EXTENSION_FSM_REDIS_URL") or None,
            redis_prefix=env.get("EXTENSION_FSM_REDIS_PREFIX", "extension_fsm:"),
            fcm_credentials_file=env.get("EXTENSION_FSM_FCM_CREDENTIALS") or None,
            fcm_endpoint=env.get("EXTENSION_FSM_FCM_ENDPOINT") or None,
            timeout_seconds=int(env.get("EXTENSION_FSM_TIMEOUT_SECONDS", "10")),
            timeout_action=env.get("EXTENSION_FSM_TIMEOUT_ACTION", "auto_approve"),
            grace_seconds=int(env.get("EXTENSION_FSM_GRACE_SECONDS", "60")),
            dev_seed=env.get("EXTENSION_FSM_DEV_SEED") == "1",
        )
