"""Seed N pending extensions whose deadline passed a minute ago.

``python seed_overdue.py URL N [PREFIX]``: the public API only (a service
whose clock stands 70 s in the past requests them with a 10 s timeout), so
the rows are exactly what a host would have written.  Run by the operator
tests from a fresh virtualenv; needs only the installed package.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from datetime import UTC, datetime, timedelta

from extension_fsm import ExtensionService
from extension_fsm.adapters.config import StaticConfig
from extension_fsm.adapters.memory import (
    MemoryPresence,
    MemoryPush,
    MemorySessionTimer,
    MemorySockets,
)
from extension_fsm.adapters.sqlalchemy import SqlAlchemyStore
from extension_fsm.simulator import make_payment, make_session


class PastClock:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def now(self) -> datetime:
        return self.at


async def seed(url: str, n: int, prefix: str = "") -> None:
    # the past clock decides the deadlines, not the database's
    store = await SqlAlchemyStore.open(url, table_prefix=prefix, clock="local")
    past = datetime.now(UTC) - timedelta(seconds=70)
    service = ExtensionService(
        store,
        clock=PastClock(past),
        config=StaticConfig(timeout_seconds=10),
        sockets=MemorySockets(),
        presence=MemoryPresence(),
        push=MemoryPush(),
        session_timer=MemorySessionTimer(),
    )
    try:
        tag = uuid.uuid4().hex[:8]
        for i in range(n):
            sid, cid, pid = f"s-{tag}-{i}", f"c-{tag}-{i}", f"p-{tag}-{i}"
            await store.seed_session(
                make_session(sid, customer_id=cid, expires_at=past + timedelta(hours=1))
            )
            await store.seed_payment(make_payment(pid, customer_id=cid))
            await service.request_extension(
                session_id=sid,
                customer_id=cid,
                duration_minutes=15,
                price=15000,
                extension_payment_session_id=pid,
            )
    finally:
        await service.aclose()  # the requests' notifications go out before the store closes
        await store.aclose()


if __name__ == "__main__":
    asyncio.run(seed(sys.argv[1], int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else ""))
