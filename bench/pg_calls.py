"""Statements and round trips per call on PostgreSQL, counted on the wire.

``python -m bench.pg_calls`` runs a request, an accept, a reject, an
``end_session`` of a session with a pending extension, a sweep of one due
extension (its timeout) and an outbox dispatch of an accept's 5 rows through
a counting proxy, after an untimed warm-up of the same calls (statements
prepared, connections opened), and prints what each call sent: statements
(``Q`` + ``E``), round trips (``Q`` + ``S``), statements prepared (``P``) and
connections opened.  It counts, it does not time.

The proxy (:func:`counting_proxy`) forwards bytes both ways untouched and
parses only the client's side of the protocol (frontend messages: one type
byte, an int32 length): ``Q`` (simple query: ``BEGIN``, ``COMMIT``, a plain
statement) and ``E`` (execute a bound prepared statement) are each one
statement; ``Q`` and ``S`` (the sync that ends an extended-protocol exchange)
are each one round trip; ``P`` (parse: a statement prepared) is counted
apart; every accepted connection is one new PostgreSQL connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from extension_fsm.adapters.clock import SystemClock
from extension_fsm.adapters.sqlalchemy import SqlAlchemyStore
from extension_fsm.outbox import OutboxDispatcher

from . import pg, raw_sql
from .fakes import CountingPush, NullSessionTimer, NullSockets
from .pg_cases import seed_outbox
from .service_kit import make_service
from .sql_cases import now, pg_connect

_REQUEST_CODES = {80877103, 80877104}  # SSLRequest, GSSENCRequest: startup follows
_CHUNK = 65536


@dataclass
class WireCounts:
    """Totals since the proxy started."""

    connections: int = 0
    queries: int = 0  # Q
    executes: int = 0  # E
    syncs: int = 0  # S
    parses: int = 0  # P

    @property
    def statements(self) -> int:
        return self.queries + self.executes

    @property
    def round_trips(self) -> int:
        return self.queries + self.syncs

    def copy(self) -> WireCounts:
        return WireCounts(self.connections, self.queries, self.executes, self.syncs, self.parses)

    def since(self, before: WireCounts) -> WireCounts:
        """What was counted after ``before`` (a copy taken earlier)."""
        return WireCounts(
            self.connections - before.connections,
            self.queries - before.queries,
            self.executes - before.executes,
            self.syncs - before.syncs,
            self.parses - before.parses,
        )


class _FrontendParser:
    """Incremental parser of one connection's client-to-server stream."""

    def __init__(self, counts: WireCounts) -> None:
        self.counts = counts
        self.buf = b""
        self.startup = True  # untyped messages until the startup message

    def feed(self, data: bytes) -> None:
        self.buf += data
        while True:
            if self.startup:
                if len(self.buf) < 8:
                    return
                length, code = struct.unpack("!ii", self.buf[:8])
                if len(self.buf) < length:
                    return
                self.buf = self.buf[length:]
                if code not in _REQUEST_CODES:
                    self.startup = False
                continue
            if len(self.buf) < 5:
                return
            kind = self.buf[:1]
            (length,) = struct.unpack("!i", self.buf[1:5])
            if len(self.buf) < 1 + length:
                return
            self.buf = self.buf[1 + length :]
            if kind == b"Q":
                self.counts.queries += 1
            elif kind == b"E":
                self.counts.executes += 1
            elif kind == b"S":
                self.counts.syncs += 1
            elif kind == b"P":
                self.counts.parses += 1


async def _pipe(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, parser: _FrontendParser | None
) -> None:
    try:
        while data := await reader.read(_CHUNK):
            if parser is not None:
                parser.feed(data)
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


@contextlib.asynccontextmanager
async def counting_proxy(url: str) -> AsyncIterator[tuple[str, WireCounts]]:
    """A proxy in front of the server of ``url``: yields (the URL through it, counts)."""
    target = urlsplit(url)
    host, port = target.hostname or "127.0.0.1", target.port or 5432
    counts = WireCounts()
    handlers: set[asyncio.Task[None]] = set()
    writers: list[asyncio.StreamWriter] = []

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        counts.connections += 1
        task = asyncio.current_task()
        if task is not None:
            handlers.add(task)
        try:
            server_r, server_w = await asyncio.wait_for(
                asyncio.open_connection(host, port), timeout=10
            )
        except (OSError, TimeoutError):
            client_w.close()
            return
        writers.extend((client_w, server_w))
        await asyncio.gather(
            _pipe(client_r, server_w, _FrontendParser(counts)),
            _pipe(server_r, client_w, None),
        )

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    proxy_port = server.sockets[0].getsockname()[1]
    netloc = target.netloc.rsplit("@", 1)
    user = netloc[0] + "@" if len(netloc) == 2 else ""
    try:
        yield urlunsplit(target._replace(netloc=f"{user}127.0.0.1:{proxy_port}")), counts
    finally:
        server.close()
        for writer in writers:  # connections the app left open: cut them, both ends
            writer.close()
        if handlers:
            await asyncio.wait(handlers, timeout=10)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), timeout=5)


CALLS = (
    "request",
    "accept",
    "reject",
    "end_session (pending)",
    "timeout (sweep of one)",
    "outbox dispatch (5 rows)",
)


async def _count(url: str) -> dict[str, WireCounts]:
    raw = pg_connect(url)
    setup = await SqlAlchemyStore.open(url, create_schema=True, clock="local")
    await setup.aclose()
    found: dict[str, WireCounts] = {}
    try:
        async with counting_proxy(url) as (proxied, counts):
            store = await SqlAlchemyStore.open(proxied, clock="local")
            service = make_service(store, id_prefix="x")
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
                    p = f"{round_}_"
                    raw_sql.seed_pg(raw, raw_sql.seed_rows(p, 3, pending=False, now=now()))
                    due = now() - timedelta(seconds=1)
                    raw_sql.seed_pg(
                        raw,
                        raw_sql.seed_rows(p + "t", 1, pending=True, now=due, deadline=due),
                    )
                    made: list[Any] = []

                    async def request(n: int = 0, p: str = p, made: list[Any] = made) -> None:
                        ext = await service.request_extension(
                            session_id=f"{p}s{n}",
                            customer_id=f"{p}c{n}",
                            duration_minutes=15,
                            price=15_000,
                            extension_payment_session_id=f"{p}p{n}",
                        )
                        made.append(ext)

                    async def answer(n: int, yes: bool, p: str = p, made: list[Any] = made) -> None:
                        await service.respond_to_extension(
                            extension_id=made[n].id,
                            session_id=f"{p}s{n}",
                            mitra_id=f"{p}m{n}",
                            accepted=yes,
                        )

                    async def accept() -> None:
                        await answer(0, True)

                    async def reject() -> None:
                        await answer(1, False)

                    async def end(p: str = p) -> None:
                        await service.end_session(f"{p}s2")

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
                    await request(1)
                    await measured("reject", reject)
                    await request(2)
                    await measured("end_session (pending)", end)
                    await measured("timeout (sweep of one)", sweep)
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


def count_calls() -> dict[str, WireCounts]:
    """``{call: counts}``, in a database of its own."""
    with pg.temporary_database() as url:
        return asyncio.run(_count(url))


def main() -> int:
    missing = pg.available()
    if missing is not None:
        print(missing, file=sys.stderr)
        return 1
    print("| call | statements | round trips | prepared | new connections |")
    print("| --- | --- | --- | --- | --- |")
    results = count_calls()
    for call in CALLS:
        c = results[call]
        print(f"| {call} | {c.statements} | {c.round_trips} | {c.parses} | {c.connections} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
