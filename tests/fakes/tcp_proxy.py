"""A loopback TCP relay in front of any server (PostgreSQL here) that can
refuse, blackhole and recover, to test how a client lives through each.

It runs on its own event loop in a daemon thread, so sync tests, a live
uvicorn on another loop and async tests can all drive it with plain calls:

- ``refuse()``: stop listening (new connections are refused) and drop every
  open link, as when the server's host is down;
- ``blackhole()``: keep accepting connections but pass no byte either way on
  new or open links, as a frozen server or a network that swallows packets;
- ``stall_open_links()``: hold the bytes of the links open now, either way,
  while new links flow (one stalled connection among healthy ones);
- ``recover()``: listen again, and let every held link flow again (what a
  frozen server does when it resumes: the bytes it was sent are read then);
- ``delay``: seconds each chunk waits before it is passed on, either way (a
  slow link: every round trip takes at least twice as long); set it at
  construction or at any time.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["TcpProxy"]

T = TypeVar("T")


class TcpProxy:
    """``127.0.0.1:port`` → ``target``; see the module docstring."""

    def __init__(self, target_host: str, target_port: int, *, delay: float = 0.0) -> None:
        self._target = (target_host, target_port)
        #: seconds each chunk is held before it is passed on (a slow link)
        self.delay = delay
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._flowing: asyncio.Event | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        #: each open link's own gate (cleared by ``stall_open_links``)
        self._gates: set[asyncio.Event] = set()
        #: connections accepted so far (to see that a client reconnected)
        self.accepted = 0

    # ------------------------------------------------------------ from any thread

    def start(self) -> TcpProxy:
        self._thread.start()
        self._call(self._listen())
        return self

    def refuse(self) -> None:
        self._call(self._refuse())

    def blackhole(self) -> None:
        self._call(self._blackhole())

    def stall_open_links(self) -> None:
        self._call(self._stall_open_links())

    def recover(self) -> None:
        self._call(self._recover())

    def stop(self) -> None:
        self._call(self._refuse())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self._loop.close()

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    # --------------------------------------------------------- on the proxy loop

    async def _listen(self) -> None:
        if self._flowing is None:
            self._flowing = asyncio.Event()
            self._flowing.set()
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _refuse(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _blackhole(self) -> None:
        assert self._flowing is not None
        self._flowing.clear()

    async def _stall_open_links(self) -> None:
        for gate in self._gates:
            gate.clear()

    async def _recover(self) -> None:
        assert self._flowing is not None
        self._flowing.set()
        for gate in self._gates:
            gate.set()
        if self._server is None:
            await self._listen()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        task = asyncio.current_task()
        assert task is not None and self._flowing is not None
        self._tasks.add(task)
        self._writers.add(writer)
        gate = asyncio.Event()
        gate.set()
        self._gates.add(gate)
        up_writer: asyncio.StreamWriter | None = None
        try:
            await self._flowing.wait()  # blackholed: accepted, never answered
            up_reader, up_writer = await asyncio.open_connection(*self._target)
            self._writers.add(up_writer)
            pumps = [
                asyncio.create_task(self._pump(reader, up_writer, gate)),
                asyncio.create_task(self._pump(up_reader, writer, gate)),
            ]
            try:
                await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for pump in pumps:
                    pump.cancel()
                await asyncio.gather(*pumps, return_exceptions=True)
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            for w in (writer, up_writer):
                if w is not None:
                    w.close()
                    self._writers.discard(w)
            self._tasks.discard(task)
            self._gates.discard(gate)

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, gate: asyncio.Event
    ) -> None:
        with contextlib.suppress(ConnectionError):
            while True:
                await self._open(gate)
                data = await reader.read(65536)
                if not data:
                    return
                if self.delay > 0:
                    await asyncio.sleep(self.delay)
                await self._open(gate)  # read just before a blackhole or stall: hold it
                writer.write(data)
                await writer.drain()

    async def _open(self, gate: asyncio.Event) -> None:
        """Return once neither the whole proxy nor this link is held."""
        assert self._flowing is not None
        while not (self._flowing.is_set() and gate.is_set()):
            await self._flowing.wait()
            await gate.wait()
