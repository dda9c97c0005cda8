"""Plays extension timelines against a database forever, until killed.

Used by ``test_crash.py``: ``python crash_player.py URL SEED``.  Prints
``ready`` once the store is open, then loops: new session and payment, a
request, then an accept, a reject, an end of session or nothing (left for the
sweep), with sweeps and outbox dispatches in between.

Each call that returned (so committed) is reported on stdout, one line each:
``requested EXT SESSION``, then ``accept EXT``, ``reject EXT`` or ``end SESSION``.
The test kills the player after a number of reports, never after a time, and
checks afterwards that every reported commit survived.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
from datetime import timedelta

from extension_fsm import ExtensionService
from extension_fsm.adapters.clock import SystemClock
from extension_fsm.adapters.config import StaticConfig
from extension_fsm.adapters.memory import (
    MemoryPresence,
    MemoryPush,
    MemorySessionTimer,
    MemorySockets,
)
from extension_fsm.adapters.sqlalchemy import SqlAlchemyStore
from extension_fsm.errors import ExtensionError
from extension_fsm.simulator import make_payment, make_session


def build(store: SqlAlchemyStore, clock: SystemClock) -> ExtensionService:
    """A service over ``store`` with recording fakes (deliveries always succeed)."""
    return ExtensionService(
        store,
        clock=clock,
        config=StaticConfig(timeout_seconds=1),
        sockets=MemorySockets(),
        presence=MemoryPresence(),
        push=MemoryPush(),
        session_timer=MemorySessionTimer(),
    )


async def play(url: str, seed: int) -> None:
    rng = random.Random(seed)
    store = await SqlAlchemyStore.open(url)  # real time: the database's clock on PostgreSQL
    clock = SystemClock()
    service = build(store, clock)
    print("ready", flush=True)
    n = 0
    while True:
        n += 1
        tag = f"k{os.getpid()}_{n}_"
        session = make_session(
            f"{tag}s", customer_id=f"{tag}c", expires_at=clock.now() + timedelta(minutes=5)
        )
        await store.seed_session(session)
        await store.seed_payment(make_payment(f"{tag}p", customer_id=f"{tag}c"))
        try:
            ext = await service.request_extension(
                session_id=session.id,
                customer_id=session.customer_id,
                duration_minutes=5,
                price=15000,
                extension_payment_session_id=f"{tag}p",
            )
            print(
                f"requested {ext.id} {session.id}", flush=True
            )  # one write: a kill never splits it
            action = rng.choice(["accept", "reject", "end", "leave"])
            if action in ("accept", "reject"):
                await service.respond_to_extension(
                    extension_id=ext.id,
                    session_id=session.id,
                    mitra_id="m1",
                    accepted=action == "accept",
                )
                print(f"{action} {ext.id}", flush=True)
            elif action == "end":
                await service.end_session(session.id)
                print(f"end {session.id}", flush=True)
        except ExtensionError:
            pass  # a late answer after a sweep, for instance: refused, nothing written
        if n % 3 == 0:
            await service.sweep_due()
            await service.dispatcher.dispatch_due()


if __name__ == "__main__":
    asyncio.run(play(sys.argv[1], int(sys.argv[2])))
