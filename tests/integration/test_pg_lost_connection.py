"""A PostgreSQL connection lost under the store (the link cut by a loopback
proxy): a call whose pooled connection died while idle is served on a new one
(its first statement only reads, so it is run again, once); a connection cut
in the middle of a unit of work fails that call with a retryable error and
writes nothing; the pool recovers either way (SQLAlchemy invalidates the
dead connections, no 503 after the link is back)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from extension_fsm.adapters.sqlalchemy import SqlAlchemyStore
from extension_fsm.adapters.sqlalchemy.engine import LOST_CONNECTION_RETRIES
from extension_fsm.adapters.sqlalchemy.failures import lost_connection
from extension_fsm.errors import StorageError
from extension_fsm.simulator import World, make_payment, make_session
from tests.fakes.tcp_proxy import TcpProxy

pytestmark = pytest.mark.postgres

FAR = datetime(2030, 1, 1, tzinfo=UTC)


@pytest.fixture
def proxy(pg_url: str) -> Iterator[TcpProxy]:
    target = make_url(pg_url)
    relay = TcpProxy(target.host or "127.0.0.1", target.port or 5432).start()
    try:
        yield relay
    finally:
        relay.stop()


def _through(pg_url: str, proxy: TcpProxy) -> str:
    url = make_url(pg_url).set(host="127.0.0.1", port=proxy.port)
    return url.render_as_string(hide_password=False) + "?connect_timeout=5&command_timeout=10"


def _cut(proxy: TcpProxy) -> None:
    """Drop every open link, then take new connections again."""
    proxy.refuse()
    proxy.recover()


async def test_a_pooled_connection_that_died_idle_is_replaced_and_the_call_served(
    pg_url: str, proxy: TcpProxy
) -> None:
    assert LOST_CONNECTION_RETRIES == 1
    store = await SqlAlchemyStore.open(
        _through(pg_url, proxy), create_schema=True, table_prefix="idle_", clock="local"
    )
    try:
        w = World(store=store)
        await w.add_session(make_session("s1", expires_at=FAR))
        await w.add_payment(make_payment("p1"))
        opened = proxy.accepted
        _cut(proxy)  # the pooled connection is dead, nobody has noticed yet
        ext = await w.service.request_extension(
            session_id="s1",
            customer_id="c1",
            duration_minutes=15,
            price=15000,
            extension_payment_session_id="p1",
        )
        assert proxy.accepted > opened  # served on a new connection
        got = await w.service.respond_to_extension(
            extension_id=ext.id, session_id="s1", mitra_id="m1", accepted=True
        )
        assert got.status.value == "accepted"
        await w.settle()
    finally:
        await store.aclose()


async def test_a_connection_cut_mid_unit_of_work_is_a_retryable_error_and_writes_nothing(
    pg_url: str, proxy: TcpProxy
) -> None:
    store = await SqlAlchemyStore.open(
        _through(pg_url, proxy), create_schema=True, table_prefix="mid_", clock="local"
    )
    try:
        async with store.unit_of_work() as uow:
            assert (await uow.execute(text("SELECT 1"))).scalar() == 1  # a read went through
            _cut(proxy)
            with pytest.raises(StorageError) as failed:  # the write is not run again
                await uow.upsert(store.tables.customers, {"id": "c9", "display_name": "X"})
            assert failed.value.retryable
            assert lost_connection(failed.value.__cause__)  # type: ignore[arg-type]
        async with store.unit_of_work() as uow:
            rows = await uow.rows(text("SELECT id FROM mid_customers"))
        assert rows == []  # nothing written by the cut unit of work
        await store.seed_session(make_session("s1", expires_at=FAR - timedelta(days=1)))
        assert [s.id for s in (await store.dump()).sessions] == ["s1"]  # the pool recovered
    finally:
        await store.aclose()
