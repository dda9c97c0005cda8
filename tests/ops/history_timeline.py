"""A real timeline for ``extension-fsm history``: the mitra's push fails once
(the provider answers 503) and is retried, nobody answers, and the deadline
times the extension out (the mitra is offline: the safeguard).

``python history_timeline.py URL`` plays it into ``URL`` (schema created if
missing) through the public API on a clock that moves only when told, with
ids that are the same on every run, and prints the extension's id.  The
operations page's rendered example is this timeline's ``history`` output.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
from datetime import UTC, datetime, timedelta

from extension_fsm import ExtensionService, PaymentSession, PaymentStatus, Session, SessionStatus
from extension_fsm.adapters.config import StaticConfig
from extension_fsm.adapters.memory_delivery import (
    MemoryPresence,
    MemoryPush,
    MemorySessionTimer,
    MemorySockets,
)
from extension_fsm.adapters.sqlalchemy import SqlAlchemyStore
from extension_fsm.errors import DeliveryError
from extension_fsm.outbox import OutboxDispatcher

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
EXTENSION_ID = "ext-1"


class StepClock:
    """A clock that moves only when told."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def now(self) -> datetime:
        return self.at

    def advance(self, seconds: float) -> None:
        self.at += timedelta(seconds=seconds)


async def play(url: str) -> str:
    """Play the timeline into ``url``; the extension's id."""
    clock = StepClock(START)
    ids = (f"ext-{n}" if n == 1 else f"row-{n}" for n in itertools.count(1))
    push = MemoryPush(failures=[DeliveryError("FCM answered 503 Unavailable", retryable=True)])
    sockets, timer = MemorySockets(), MemorySessionTimer()
    async with await SqlAlchemyStore.open(url, create_schema=True, clock="local") as store:
        await store.seed_session(
            Session(
                "s-42", "c-7", "m-3", SessionStatus.ACTIVE, START + timedelta(minutes=5), "Rina"
            )
        )
        await store.seed_payment(PaymentSession("pay-9", "c-7", PaymentStatus.CONFIRMED, 25000))
        dispatcher = OutboxDispatcher(
            store.outbox, clock=clock, sockets=sockets, push=push, session_timer=timer
        )
        async with ExtensionService(
            store,
            clock=clock,
            config=StaticConfig(timeout_seconds=60),
            sockets=sockets,
            presence=MemoryPresence(),  # the mitra is offline
            push=push,
            session_timer=timer,
            dispatcher=dispatcher,
            new_id=lambda: next(ids),
        ) as service:
            ext = await service.request_extension(
                session_id="s-42",
                customer_id="c-7",
                duration_minutes=15,
                price=25000,
                extension_payment_session_id="pay-9",
            )
            await service.dispatcher.drain()  # the push fails: retried in 1 s
            clock.advance(2)
            await service.dispatcher.dispatch_due()  # the retry reaches the phone
            clock.advance(60)
            await service.sweep_due()  # no answer: the deadline decides
            await service.dispatcher.drain()
            await service.dispatcher.dispatch_due()
    return ext.id


if __name__ == "__main__":
    print(asyncio.run(play(sys.argv[1])))
