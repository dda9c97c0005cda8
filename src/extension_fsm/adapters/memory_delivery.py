"""The delivery, presence and timer ports in memory: recording fakes
that behave like the real ones (a socket takes a message only if one is open;
a push can fail on demand), for tests, the simulator and single-process hosts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from ..errors import DeliveryError
from ..model import (
    JSONValue,
    Participant,
    PaymentConsumed,
    PaymentFailed,
    PushMessage,
)

__all__ = [
    "Delivery",
    "MemoryDeviceTokens",
    "MemoryPaymentEvents",
    "MemoryPresence",
    "MemoryPush",
    "MemorySessionTimer",
    "MemorySockets",
]


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message that reached (or failed to reach) someone."""

    channel: str  # "ws" | "push"
    participant: Participant
    user_id: str
    session_id: str | None
    payload: Mapping[str, JSONValue]
    taken: bool = True


@dataclass
class MemorySockets:
    """Session sockets as flags: who is on which session's socket, who is connected."""

    on_session: dict[tuple[str, Participant], bool] = field(default_factory=dict)
    connected: dict[tuple[Participant, str], bool] = field(default_factory=dict)
    sent: list[Delivery] = field(default_factory=list)

    async def send(
        self, session_id: str, participant: Participant, message: Mapping[str, JSONValue]
    ) -> bool:
        taken = self.on_session.get((session_id, participant), False)
        self.sent.append(Delivery("ws", participant, "", session_id, dict(message), taken))
        return taken

    async def is_connected(self, participant: Participant, user_id: str) -> bool:
        return self.connected.get((participant, user_id), False)


@dataclass
class MemoryPresence:
    """The mitra's online flag."""

    online: dict[str, bool] = field(default_factory=dict)

    async def is_online(self, mitra_id: str) -> bool:
        return self.online.get(mitra_id, False)


@dataclass
class MemoryPush:
    """Records pushes; ``failures`` are raised, one per send, before succeeding."""

    sent: list[Delivery] = field(default_factory=list)
    failures: list[DeliveryError] = field(default_factory=list)

    async def send(self, participant: Participant, user_id: str, message: PushMessage) -> None:
        if self.failures:
            raise self.failures.pop(0)
        payload: dict[str, JSONValue] = {
            "title": message.title,
            "body": message.body,
            "data": dict(message.data),
        }
        self.sent.append(Delivery("push", participant, user_id, None, payload))


@dataclass
class MemoryDeviceTokens:
    """Device tokens per user."""

    by_user: dict[tuple[Participant, str], list[str]] = field(default_factory=dict)

    async def tokens(self, participant: Participant, user_id: str) -> Sequence[str]:
        return list(self.by_user.get((participant, user_id), []))

    async def register(
        self, participant: Participant, user_id: str, token: str, *, keep: int = 10
    ) -> None:
        """Add ``token`` (a repeat moves it to the newest); only the ``keep``
        most recently registered ones stay."""
        if keep < 1:
            raise ValueError(f"keep must be at least 1, got {keep}")
        tokens = self.by_user.setdefault((participant, user_id), [])
        if token in tokens:
            tokens.remove(token)
        tokens.append(token)
        del tokens[:-keep]

    async def remove(self, token: str) -> None:
        for tokens in self.by_user.values():
            if token in tokens:
                tokens.remove(token)


@dataclass
class MemorySessionTimer:
    """Records what the host's session timer was told (``seqs``: each call's
    ``seq``, in the same order as ``calls``)."""

    calls: list[tuple[str, str, datetime | None]] = field(default_factory=list)
    seqs: list[int] = field(default_factory=list)

    async def expiry_extended(self, session_id: str, expires_at: datetime, *, seq: int) -> None:
        self.calls.append(("expiry_extended", session_id, expires_at))
        self.seqs.append(seq)

    async def start_closure_grace(self, session_id: str, deadline: datetime, *, seq: int) -> None:
        self.calls.append(("start_closure_grace", session_id, deadline))
        self.seqs.append(seq)

    async def clear_closure_grace(self, session_id: str, *, seq: int) -> None:
        self.calls.append(("clear_closure_grace", session_id, None))
        self.seqs.append(seq)


@dataclass
class MemoryPaymentEvents:
    """Records the payment events the host was told, in the order told;
    ``failures`` are raised, one per call, before succeeding."""

    events: list[PaymentConsumed | PaymentFailed] = field(default_factory=list)
    failures: list[Exception] = field(default_factory=list)

    async def consumed(self, event: PaymentConsumed) -> None:
        if self.failures:
            raise self.failures.pop(0)
        self.events.append(event)

    async def failed(self, event: PaymentFailed) -> None:
        if self.failures:
            raise self.failures.pop(0)
        self.events.append(event)

    def unique(self) -> list[PaymentConsumed | PaymentFailed]:
        """The events with repeats dropped by ``dedupe_key``, as a host would."""
        seen: set[str] = set()
        out: list[PaymentConsumed | PaymentFailed] = []
        for event in self.events:
            if event.dedupe_key not in seen:
                seen.add(event.dedupe_key)
                out.append(event)
        return out
