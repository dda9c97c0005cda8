"""PostgreSQL behind a proxy that refuses, blackholes and recovers: every
call gets a clear, retryable ``StorageError`` (never a hang, never a driver
exception), nothing is written by a refused call, and once the database is
back no call fails on a connection that died meanwhile."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest
from sqlalchemy.engine import make_url

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
from extension_fsm.core import Change
from extension_fsm.errors import ErrorCode, StorageError
from extension_fsm.simulator import make_payment, make_session
from extension_fsm.testing.samples import ext
from tests.fakes.tcp_proxy import TcpProxy
from tests.integration.sql_support import private_postgres_database

pytestmark = pytest.mark.postgres

T = TypeVar("T")
#: small limits so that a refused or frozen database answers quickly
LIMITS = "connect_timeout=1&statement_timeout=1&command_timeout=1.5&pool_timeout=1"
#: a guard against a hang, far above LIMITS: not a speed being measured
HANG = 60


async def bounded(call: Awaitable[T]) -> T:
    return await asyncio.wait_for(call, HANG)


class Env:
    def __init__(self, store: SqlAlchemyStore, proxy: TcpProxy, direct: SqlAlchemyStore) -> None:
        self.store, self.proxy, self.direct = store, proxy, direct
        self.service = ExtensionService(
            store,
            clock=SystemClock(),
            config=StaticConfig(30, "auto_approve", 60),
            sockets=MemorySockets(),
            presence=MemoryPresence(),
            push=MemoryPush(),
            session_timer=MemorySessionTimer(),
        )
        self.n = 0

    async def party(self) -> tuple[str, str, str]:
        """A fresh session and payment, seeded past the proxy."""
        self.n += 1
        s, c, p = f"s{self.n}", f"c{self.n}", f"p{self.n}"
        expires = datetime.now(UTC) + timedelta(minutes=30)
        await self.direct.seed_session(make_session(s, customer_id=c, expires_at=expires))
        await self.direct.seed_payment(make_payment(p, customer_id=c))
        return s, c, p

    async def request(self, party: tuple[str, str, str]) -> Any:
        s, c, p = party
        return await bounded(
            self.service.request_extension(
                session_id=s,
                customer_id=c,
                duration_minutes=30,
                price=15000,
                extension_payment_session_id=p,
            )
        )

    async def use_every_pooled_connection(self) -> None:
        async def one() -> None:
            async with self.store.unit_of_work() as uow:
                assert (await uow.snapshots.for_end("none")).session is None
                await asyncio.sleep(0.05)  # overlap, so the pool opens several

        await bounded(asyncio.gather(*(one() for _ in range(5))))


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    """The store under test reaches the database through the proxy."""
    with private_postgres_database("unavail") as url:
        direct = await SqlAlchemyStore.open(url, create_schema=True)
        target = make_url(url)
        proxy = TcpProxy(target.host or "127.0.0.1", target.port or 5432).start()
        proxied = target.set(host="127.0.0.1", port=proxy.port).render_as_string(
            hide_password=False
        )
        store = await SqlAlchemyStore.open(f"{proxied}?{LIMITS}")
        try:
            yield Env(store, proxy, direct)
        finally:
            proxy.recover()
            await store.aclose()
            await direct.aclose()
            proxy.stop()


def assert_unavailable(err: StorageError) -> None:
    assert err.retryable
    assert err.code is ErrorCode.STORAGE_UNAVAILABLE and err.status_code == 503
    assert err.to_dict() == {
        "code": "STORAGE_UNAVAILABLE",
        "message": err.message,
        "status_code": 503,
    }


@pytest.mark.parametrize("fault", ["refuse", "blackhole"])
async def test_a_database_away_is_a_retryable_error_then_calls_work_again(
    env: Env, fault: str
) -> None:
    party = await env.party()
    await env.use_every_pooled_connection()
    before = await env.direct.dump()
    getattr(env.proxy, fault)()
    with pytest.raises(StorageError) as caught:
        await env.request(party)
    assert_unavailable(caught.value)
    with pytest.raises(StorageError) as caught:
        await bounded(env.service.pending_extension(party[0]))
    assert_unavailable(caught.value)
    env.proxy.recover()
    await asyncio.sleep(0.5)  # let held bytes of the frozen links reach the server
    assert await env.direct.dump() == before  # the refused call wrote nothing
    # Back: every call works, whichever pooled connection it gets.
    for _ in range(3):
        await env.use_every_pooled_connection()
    ext = await env.request(party)
    assert (await bounded(env.service.pending_extension(party[0]))) is not None
    assert ext.session_id == party[0]


async def test_a_database_that_never_answers_the_commit_is_a_retryable_error(
    env: Env,
) -> None:
    party = await env.party()
    async with env.store.unit_of_work() as uow:
        assert (await uow.snapshots.for_request(party[0], party[2])).session is not None
        # the decision's write, which the commit runs
        new = ext("x-frozen", session_id=party[0], payment_id=party[2])
        await uow.write_batch(Change(None, new), None, None, None, [], [])
        env.proxy.blackhole()  # frozen between the reads and the commit
        with pytest.raises(StorageError) as caught:
            await bounded(uow.commit())
    assert_unavailable(caught.value)
    env.proxy.recover()
    async with env.store.unit_of_work() as uow:
        assert (await uow.snapshots.for_end(party[0])).session is not None


async def test_a_statement_past_the_statement_timeout_is_a_retryable_error(env: Env) -> None:
    from sqlalchemy import text

    with pytest.raises(StorageError) as caught:
        async with env.store.unit_of_work() as uow:
            await bounded(uow.execute(text("SELECT pg_sleep(30)")))
    assert_unavailable(caught.value)
    async with env.store.unit_of_work() as uow:  # the connection pool is fine
        await uow.execute(text("SELECT 1"))
