"""Who hears of a committed decision: the participants' sockets and devices,
the mitra's presence, the host's session timers and its money side."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Protocol

from ..model import JSONValue, Participant, PaymentConsumed, PaymentFailed, PushMessage

__all__ = [
    "DeviceTokens",
    "PaymentEvents",
    "Presence",
    "PushSender",
    "SessionSockets",
    "SessionTimer",
]


class SessionSockets(Protocol):
    """The chat WebSocket layer."""

    async def send(
        self, session_id: str, participant: Participant, message: Mapping[str, JSONValue]
    ) -> bool:
        """Send to ``participant``'s socket(s) on this session; say whether one took it.

        Raise (a ``DeliveryError``) when you cannot say, e.g. the layer that
        reaches other instances is down: the dispatcher then sends the push at
        once (the app drops a repeat by ``dedupe_key``), or retries a message
        that has none."""
        ...

    async def is_connected(self, participant: Participant, user_id: str) -> bool:
        """Whether the user has any socket open, on any screen or instance."""
        ...


class Presence(Protocol):
    """The mitra's online flag (Valkey in the seed)."""

    async def is_online(self, mitra_id: str) -> bool: ...


class PushSender(Protocol):
    """Push notifications; raises ``DeliveryError`` on failure."""

    async def send(self, participant: Participant, user_id: str, message: PushMessage) -> None: ...


class DeviceTokens(Protocol):
    """The host's registry of push tokens."""

    async def tokens(self, participant: Participant, user_id: str) -> Sequence[str]: ...

    async def remove(self, token: str) -> None:
        """Forget a token the push service says is dead."""
        ...


class SessionTimer(Protocol):
    """The host's session timers (expiry and closure grace).

    Each command carries ``seq``: its place in commit order among the
    session's commands and payment events (it grows with every decision of
    the session; not consecutive).  The values are absolute, so the newest
    command wins: a command whose ``seq`` is not above the highest one the
    host already applied for that session is stale (a repeat, or a write
    that was held up on the way) and must be dropped.
    """

    async def expiry_extended(self, session_id: str, expires_at: datetime, *, seq: int) -> None: ...

    async def start_closure_grace(
        self, session_id: str, deadline: datetime, *, seq: int
    ) -> None: ...

    async def clear_closure_grace(self, session_id: str, *, seq: int) -> None: ...


class PaymentEvents(Protocol):
    """The host's money side effects, told after the commit that decided them.

    Delivered at least once (drop repeats by the event's ``dedupe_key``), in
    commit order per session, retried with backoff while a call raises; a
    failure here never undoes the decision.  A retryable
    :class:`~extension_fsm.errors.DeliveryError` (or any other exception) is
    retried, a final one is given up on and kept in the outbox.
    """

    async def consumed(self, event: PaymentConsumed) -> None:
        """The extension was approved and its payment session consumed: record
        the earnings, the receipt, whatever the host's charge involves."""
        ...

    async def failed(self, event: PaymentFailed) -> None:
        """The extension ended uncharged and its payment session was failed:
        refund or release the money and write the failed-pairings audit row
        tagged with ``event.cause``."""
        ...
