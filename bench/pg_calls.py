"""Statements and round trips per call on PostgreSQL, counted on the wire.

``python -m bench.pg_calls`` runs one request, one accept, a sweep of one due
extension and an outbox dispatch of an accept's 5 rows through
:mod:`bench.pgwire`'s counting proxy, once on each path of the store (asyncpg
directly, and SQLAlchemy's engine with ``?direct=0``), after an untimed
warm-up of the same calls (statements prepared, connections opened), and
prints what each call sent: statements (``Q`` + ``E``), round trips (``Q`` +
``S``), statements prepared (``P``) and connections opened.  It counts, it
does not time.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from extension_fsm.adapters.clock import SystemClock
from extension_fsm.adapters.sqlalchemy import SqlAlchemyStore
from extension_fsm.outbox import OutboxDispatcher

from . import pg, raw_sql
from .fakes import CountingPush, NullSessionTimer, NullSockets
from .pg_cases import seed_outbox
from .pgwire import WireCounts, counting_proxy
from .service_kit import make_service
from .sql_cases import now, pg_connect

CALLS = ("request", "accept", "sweep of one", "outbox dispatch (5 rows)")


async def _count(url: str, direct: bool) -> dict[str, WireCounts]:
    raw = pg_connect(url)
    setup = await SqlAlchemyStore.open(url, create_schema=True, clock="local")
    await setup.aclose()
    found: dict[str, WireCounts] = {}
    try:
        async with counting_proxy(url) as (proxied, counts):
            store = await SqlAlchemyStore.open(
                proxied if direct else proxied + "?direct=0", clock="local"
            )
            service = make_service(store, id_prefix="x" if direct else "y")
            dispatcher = OutboxDispatcher(
                store.outbox,
                clock=SystemClock(),
                sockets=NullSockets(),
                push=CountingPush(),
                session_timer=NullSessionTimer(),
            )

            async def measured(name: str, call: Callable[[], Awaitable[Any]]) -> None:
                before = counts.copy()
                await call()
                found[name] = counts.since(before)

            try:
                for round_ in ("warm", "count"):
                    p = f"{'d' if direct else 'e'}{round_}_"
                    raw_sql.seed_pg(raw, raw_sql.seed_rows(p, 1, pending=False, now=now()))
                    due = now() - timedelta(seconds=1)
                    raw_sql.seed_pg(
                        raw,
                        raw_sql.seed_rows(p + "t", 1, pending=True, now=due, deadline=due),
                    )
                    made: list[Any] = []

                    async def request(p: str = p, made: list[Any] = made) -> None:
                        ext = await service.request_extension(
                            session_id=f"{p}s0",
                            customer_id=f"{p}c0",
                            duration_minutes=15,
                            price=15_000,
                            extension_payment_session_id=f"{p}p0",
                        )
                        made.append(ext)

                    async def accept(p: str = p, made: list[Any] = made) -> None:
                        await service.respond_to_extension(
                            extension_id=made[0].id,
                            session_id=f"{p}s0",
                            mitra_id=f"{p}m0",
                            accepted=True,
                        )

                    async def sweep() -> None:
                        swept = await service.sweep_due()
                        if len(swept) != 1:
                            raise RuntimeError(f"swept {len(swept)}, expected 1")

                    async def dispatch() -> None:
                        report = await dispatcher.dispatch_due(100)
                        if report.delivered != 5:
                            raise RuntimeError(f"delivered {report.delivered}, expected 5")

                    await measured("request", request)
                    await measured("accept", accept)
                    await measured("sweep of one", sweep)
                    # Every outbox row so far is delivered first (untimed), then an
                    # accept's 5 rows are written by COPY and dispatched.
                    while (await dispatcher.dispatch_due(100)).delivered:
                        pass
                    seed_outbox(raw, p + "o", 5)
                    await measured("outbox dispatch (5 rows)", dispatch)
            finally:
                await service.aclose()
                await store.aclose()
    finally:
        raw.close()
    return found


def count_calls() -> dict[str, dict[str, WireCounts]]:
    """``{path: {call: counts}}`` for both paths, each in its own database."""
    out = {}
    for name, direct in (("asyncpg direct", True), ("SQLAlchemy engine", False)):
        with pg.temporary_database() as url:
            out[name] = asyncio.run(_count(url, direct))
    return out


def main() -> int:
    missing = pg.available()
    if missing is not None:
        print(missing, file=sys.stderr)
        return 1
    print("| call | path | statements | round trips | prepared | new connections |")
    print("| --- | --- | --- | --- | --- | --- |")
    results = count_calls()
    for call in CALLS:
        for path, calls in results.items():
            c = calls[call]
            print(
                f"| {call} | {path} | {c.statements} | {c.round_trips} | {c.parses} "
                f"| {c.connections} |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
