"""Reaching the test Redis: a unique key prefix per run, skip (or, under
CI=true, fail) when the server is not there, and a loopback TCP proxy that
can cut and restore a client's link to it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from urllib.parse import urlparse

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from tests.ci import IN_CI
from tests.fakes.tcp_proxy import TcpProxy

__all__ = [
    "RedisProxy",
    "closed_port",
    "connect",
    "new_prefix",
    "redis_relay",
    "redis_url",
    "wipe",
]


def redis_url() -> str:
    return os.environ.get("EXTENSION_FSM_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def redis_relay() -> TcpProxy:
    """A started loopback :class:`TcpProxy` in front of the test Redis (one that
    can delay, stall or blackhole links); the caller stops it."""
    target = urlparse(redis_url())
    return TcpProxy(target.hostname or "127.0.0.1", target.port or 6379).start()


def new_prefix() -> str:
    """A key prefix no other run (or helper) uses."""
    return f"test-extension-fsm:{uuid.uuid4().hex[:12]}:"


async def connect(url: str | None = None, *, retries: int = 1) -> Redis:
    """A client to the test Redis, or skip (fail under CI) if it is not there."""
    client = Redis.from_url(
        url or redis_url(), socket_connect_timeout=2, retry=Retry(NoBackoff(), retries)
    )
    try:
        await client.ping()
    except Exception as err:
        await client.aclose()
        message = f"Redis not reachable at {url or redis_url()}: {err!r}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return client


async def wipe(client: Redis, prefix: str) -> None:
    """Delete every key under ``prefix``."""
    keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=500)]
    if keys:
        await client.delete(*keys)


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisProxy:
    """A TCP relay 127.0.0.1:port → the test Redis; ``cut()`` drops every link
    and refuses new ones until ``restore()`` listens on the same port again."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> RedisProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def restore(self) -> None:
        await self.start()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self._target)
        self._writers.update((writer, up_writer))
        pumps = [
            asyncio.create_task(self._pump(reader, up_writer)),
            asyncio.create_task(self._pump(up_reader, writer)),
        ]
        self._tasks.update(pumps)
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pumps:
                task.cancel()
                self._tasks.discard(task)
            for w in (writer, up_writer):
                w.close()
                self._writers.discard(w)

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
