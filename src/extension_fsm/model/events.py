"""What happens to the flow (the events the core decides) and what the shell
knows of the world when it decides (:class:`Facts`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TypeAlias

from .values import TimeoutAction

__all__ = [
    "DEFAULT_STALE_AFTER_SECONDS",
    "EndSession",
    "Event",
    "Facts",
    "RequestExtension",
    "RespondToExtension",
    "TimeoutExtension",
]


@dataclass(frozen=True, slots=True)
class RequestExtension:
    """The customer asks for ``duration_minutes`` more, paid by a payment session."""

    session_id: str
    customer_id: str
    duration_minutes: object
    price: object
    payment_session_id: str | None


@dataclass(frozen=True, slots=True)
class RespondToExtension:
    """The mitra accepts or rejects."""

    extension_id: str
    session_id: str
    mitra_id: str
    accepted: bool


@dataclass(frozen=True, slots=True)
class TimeoutExtension:
    """The answer deadline passed (timer or sweep)."""

    extension_id: str


@dataclass(frozen=True, slots=True)
class EndSession:
    """The host ends the session (grace over, or closed by a participant)."""

    session_id: str


Event: TypeAlias = RequestExtension | RespondToExtension | TimeoutExtension | EndSession


DEFAULT_STALE_AFTER_SECONDS = 60
"""How late past its deadline a timeout may be handled and still auto-approve."""


@dataclass(frozen=True, slots=True)
class Facts:
    """What the shell knows of the world at decision time; the core reads nothing else."""

    now: datetime
    timeout_seconds: int = 10
    timeout_action: TimeoutAction = TimeoutAction.AUTO_APPROVE
    grace_seconds: int = 60
    mitra_connected: bool = False
    mitra_online: bool = False
    new_extension_id: str = ""
    #: a timeout handled more than this many seconds after its deadline is
    #: stale: presence now says nothing about the deadline, so it never charges
    stale_after_seconds: float = DEFAULT_STALE_AFTER_SECONDS
