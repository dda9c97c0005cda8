"""Dependencies that hang, refuse or fail once, and count what they were asked.

Each records how many calls started, how many are in flight at once (the
most ever), and how many finished; a hanging one waits on an event the test
sets (or never does).
"""

from __future__ import annotations

import asyncio
from datetime import datetime

from extension_fsm.adapters.memory import MemoryPush, MemorySessionTimer
from extension_fsm.errors import DeliveryError
from extension_fsm.model import Participant, PushMessage

__all__ = ["CallCounter", "FlakyTimer", "HangingPush"]


class CallCounter:
    """Calls started, in flight now, the most in flight at once, and finished."""

    def __init__(self) -> None:
        self.started = 0
        self.in_flight = 0
        self.most_in_flight = 0
        self.finished = 0
        self.first_started = asyncio.Event()

    def enter(self) -> None:
        self.started += 1
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        self.first_started.set()

    def leave(self, *, finished: bool) -> None:
        self.in_flight -= 1
        if finished:
            self.finished += 1


class HangingPush(MemoryPush):
    """A push provider that hangs until ``release`` is set (``hang_calls``: only
    the first n calls hang; ``None``: every call while unreleased)."""

    def __init__(self, *, hang_calls: int | None = None) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.hang_calls = hang_calls
        self.calls = CallCounter()

    async def send(self, participant: Participant, user_id: str, message: PushMessage) -> None:
        self.calls.enter()
        done = False
        try:
            if self.hang_calls is None or self.calls.started <= self.hang_calls:
                await self.release.wait()
            await super().send(participant, user_id, message)
            done = True
        finally:
            self.calls.leave(finished=done)


class FlakyTimer(MemorySessionTimer):
    """A host session timer whose first ``start_closure_grace`` fails (retryable),
    as a timer service that was briefly unreachable would."""

    def __init__(self) -> None:
        super().__init__()
        self.failures_left = 1

    async def start_closure_grace(self, session_id: str, deadline: datetime, *, seq: int) -> None:
        if self.failures_left:
            self.failures_left -= 1
            raise DeliveryError("session timer unreachable", retryable=True)
        await super().start_closure_grace(session_id, deadline, seq=seq)

    def holds_grace(self, session_id: str) -> bool:
        """Whether the last grace command this timer took for the session started one."""
        grace = [c for c in self.calls if c[1] == session_id and c[0] != "expiry_extended"]
        return bool(grace) and grace[-1][0] == "start_closure_grace"
