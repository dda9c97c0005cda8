"""Round trips on the wire per call on PostgreSQL, and the proxy that counts them.

:func:`counting_proxy` is a loopback proxy in front of the server: it forwards
bytes both ways untouched and parses only the client's side of the protocol
(frontend messages: one type byte, an int32 length).  ``Q`` (simple query:
``BEGIN``, ``COMMIT``, a plain statement) and ``E`` (execute a bound prepared
statement) are each one statement; ``Q`` and ``S`` (the sync that ends an
extended-protocol exchange) are each one round trip, so a pipelined batch of
executes ending with one sync is one; ``P`` (a statement prepared) is counted
apart; every accepted connection is one new PostgreSQL connection.  It counts,
it does not time: the timed cases never go through it.

:func:`round_trips` (the case) runs request, accept, reject, a timeout (a sweep
of one due extension) and ``end_session`` through ``ExtensionService`` over
``SqlAlchemyStore`` on the proxy, after an untimed warm-up of the same calls
(statements prepared, the pool's connection opened), and reports the round
trips of each: the target is at most 2.  ``python -m bench.pg_calls`` prints
the table.
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

from . import pg, raw_sql
from .fakes import InMemorySockets
from .harness import Result, check
from .service_kit import make_service, open_store
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


# ------------------------------------------------------------ the case

CALLS = ("request", "accept", "reject", "timeout (sweep of one)", "end_session")
DELIVERED = "accept with its outbox delivered"  # informative: what delivery adds
TARGET = 2


async def count_on(url: str) -> dict[str, WireCounts]:
    """Each call's counts, the second of two rounds (the first warms up)."""
    raw = pg_connect(url)
    await (await open_store(url)).aclose()  # the tables, outside the count
    found: dict[str, WireCounts] = {}
    try:
        async with counting_proxy(url) as (proxied, counts):
            store = await open_store(proxied)
            service = make_service(store)
            delivering = make_service(store, deliver=True, sockets=InMemorySockets(), id_prefix="d")

            async def measured(name: str, call: Callable[[], Awaitable[Any]]) -> None:
                before = counts.copy()
                await call()
                found[name] = counts.since(before)

            try:
                for round_ in ("warm", "count"):
                    p = f"{round_}_"
                    raw_sql.seed_pg(raw, raw_sql.seed_rows(p, 4, pending=False, now=now()))
                    due = now() - timedelta(seconds=1)
                    raw_sql.seed_pg(
                        raw, raw_sql.seed_rows(p + "t", 1, pending=True, now=due, deadline=due)
                    )
                    made: dict[int, str] = {}

                    async def request(i: int, p: str = p, made: dict[int, str] = made) -> None:
                        ext = await service.request_extension(
                            session_id=f"{p}s{i}",
                            customer_id=f"{p}c{i}",
                            duration_minutes=15,
                            price=15_000,
                            extension_payment_session_id=f"{p}p{i}",
                        )
                        made[i] = ext.id

                    async def answer(
                        i: int, accepted: bool, p: str = p, made: dict[int, str] = made
                    ) -> None:
                        ext = await service.respond_to_extension(
                            extension_id=made[i],
                            session_id=f"{p}s{i}",
                            mitra_id=f"{p}m{i}",
                            accepted=accepted,
                        )
                        want = "accepted" if accepted else "rejected"
                        check(ext.status.value == want, f"{made[i]}: {ext.status}, not {want}")

                    async def sweep() -> None:
                        swept = await service.sweep_due()
                        check(len(swept) == 1, f"the sweep resolved {len(swept)}, expected 1")

                    async def end(p: str = p) -> None:
                        session = await service.end_session(f"{p}s2")
                        check(session.status.value == "ended", f"session {session.status}")

                    await measured("request", lambda: request(0))
                    await measured("accept", lambda: answer(0, True))
                    await request(1)
                    await measured("reject", lambda: answer(1, False))
                    await measured("timeout (sweep of one)", sweep)
                    await request(2)  # end_session with a pending extension: the most it does
                    await measured("end_session", end)
                    ext = await delivering.request_extension(
                        session_id=f"{p}s3",
                        customer_id=f"{p}c3",
                        duration_minutes=15,
                        price=15_000,
                        extension_payment_session_id=f"{p}p3",
                    )
                    await delivering.dispatcher.drain()  # the request's rows, not counted

                    async def accept_delivered(p: str = p, ext_id: str = ext.id) -> None:
                        await delivering.respond_to_extension(
                            extension_id=ext_id,
                            session_id=f"{p}s3",
                            mitra_id=f"{p}m3",
                            accepted=True,
                        )
                        await delivering.dispatcher.drain()

                    await measured(DELIVERED, accept_delivered)
            finally:
                await service.aclose()
                await delivering.aclose()
                await store.aclose()
    finally:
        raw.close()
    return found


def count_calls() -> dict[str, WireCounts]:
    """``{call: counts}`` in a database of its own."""
    with pg.temporary_database() as url:
        return asyncio.run(count_on(url))


def round_trips() -> list[Result]:
    """One row per call: its round trips against the target of 2."""
    rows = []
    for call, c in count_calls().items():
        if call == DELIVERED:
            rows.append(
                Result(
                    case=f"round trips on the wire: {call} (PostgreSQL)",
                    ours=float(c.round_trips),
                    baseline=float(TARGET),
                    unit="round trips",
                    baseline_name="the decision's target (informative: delivery comes after "
                    "the call returns)",
                    target="informative",
                    limit=None,
                    verified=True,
                    notes=[
                        f"the accept and its 6 outbox rows delivered to in-memory sockets: "
                        f"{c.statements} statements, {c.round_trips} round trips"
                    ],
                    extra={"statements": c.statements, "round_trips": c.round_trips},
                )
            )
            continue
        rows.append(
            Result(
                case=f"round trips on the wire: {call} (PostgreSQL)",
                ours=float(c.round_trips),
                baseline=float(TARGET),
                unit="round trips",
                baseline_name=f"the target: {TARGET} round trips a call",
                target=f"≤ {TARGET}",
                limit=1.0,
                verified=True,
                notes=[
                    f"{c.statements} statements (Q + E), {c.round_trips} round trips (Q + S), "
                    f"{c.parses} prepared, {c.connections} new connections; counted after a "
                    "warm-up round of the same calls; outbox delivery not included (the "
                    "dispatcher's claim and mark come after the call)"
                ],
                extra={
                    "statements": c.statements,
                    "round_trips": c.round_trips,
                    "parses": c.parses,
                    "connections": c.connections,
                },
            )
        )
    return rows


def main() -> int:
    missing = pg.available()
    if missing is not None:
        print(missing, file=sys.stderr)
        return 1
    print("| call | statements | round trips | prepared | new connections |")
    print("| --- | --- | --- | --- | --- |")
    for call, c in count_calls().items():
        print(f"| {call} | {c.statements} | {c.round_trips} | {c.parses} | {c.connections} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
