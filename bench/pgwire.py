"""Counting what an app sends PostgreSQL: a loopback proxy that reads the wire.

``pg_stat_statements`` needs a server restart to load, and engine events miss
any statement a driver sends directly; the wire sees every one of them.  The
proxy forwards bytes both ways untouched and parses only the client's side of
the protocol (frontend messages: one type byte, an int32 length):

- ``Q`` (simple query: ``BEGIN``, ``COMMIT``, a plain statement) and ``E``
  (execute a bound prepared statement) are each counted as one statement;
- ``Q`` and ``S`` (the sync that ends an extended-protocol exchange) are each
  one round trip: a pipelined batch of executes ends with one sync; ``P``
  (parse: a statement prepared) is counted apart;
- every accepted connection is one new PostgreSQL connection.

It counts, it does not time: the timed runs never go through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

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
