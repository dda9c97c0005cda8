"""The example over PostgreSQL when the database is in trouble: unreachable
or frozen, every database route answers 503 ``{code, message}`` with
``Retry-After`` within its configured timeouts (never a hang, never a
plain-text 500); after recovery no request fails on a connection that died
meanwhile; and instances starting together on an empty database all start."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import make_url

from examples.fastapi_app.app import create_app
from examples.fastapi_app.dev import seed_demo
from examples.fastapi_app.settings import Settings
from extension_fsm import PaymentStatus
from extension_fsm.adapters.sqlalchemy import SqlAlchemyStore
from extension_fsm.testing.samples import read_rows
from tests.e2e.live import LiveServer
from tests.e2e.parties import SECRET, Party, auth, seed_party
from tests.fakes.tcp_proxy import TcpProxy
from tests.integration.sql_support import private_postgres_database

pytestmark = pytest.mark.postgres

#: small limits so that a refused or frozen database answers quickly
LIMITS = "connect_timeout=1&statement_timeout=1&command_timeout=1.5&pool_timeout=1"
#: the HTTP client's guard against a hang, far above LIMITS (not a measured speed)
HANG = 60.0


class Env:
    def __init__(self, live: LiveServer, proxy: TcpProxy) -> None:
        self.live, self.proxy = live, proxy
        self.http = httpx.Client(base_url=live.url, timeout=HANG)

    def rows(self) -> tuple[Any, ...]:
        d = self.live.call(self.live.runtime.store.dump())
        outbox = [(m.id, m.kind, m.dedupe_key) for m, _ in d.outbox]  # attempts move on
        return (d.sessions, d.payments, d.extensions, d.ledger, d.log, outbox)

    def request(self, party: Party) -> httpx.Response:
        return self.http.post(
            f"/chat/{party.session_id}/extensions",
            json={
                "duration_minutes": 30,
                "price": 25000,
                "extension_payment_session_id": party.payment_id,
            },
            headers=auth(party.customer),
        )

    def info(self, party: Party) -> httpx.Response:
        return self.http.get(f"/chat/{party.session_id}/info", headers=auth(party.customer))

    def many_infos(self, party: Party, n: int = 12) -> list[int]:
        """``n`` overlapping requests, so that several pooled connections are used."""
        with ThreadPoolExecutor(6) as pool:
            return list(pool.map(lambda _: self.info(party).status_code, range(n)))


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    with private_postgres_database("e2e_trouble") as url:
        target = make_url(url)
        proxy = TcpProxy(target.host or "127.0.0.1", target.port or 5432).start()
        proxied = target.set(host="127.0.0.1", port=proxy.port)
        settings = Settings(
            jwt_secret=SECRET,
            database_url=f"{proxied.render_as_string(hide_password=False)}?{LIMITS}",
            timeout_seconds=30,
            sweep_interval=0.2,
        )
        live = LiveServer(create_app(settings)).start()
        e = Env(live, proxy)
        try:
            yield e
        finally:
            e.http.close()
            proxy.recover()
            live.stop()
            proxy.stop()


def assert_503(r: httpx.Response) -> None:
    assert r.status_code == 503, r.text
    assert r.json() == {"code": "STORAGE_UNAVAILABLE", "message": r.json()["message"]}
    assert int(r.headers["retry-after"]) > 0


@pytest.mark.parametrize("fault", ["refuse", "blackhole"])
def test_database_trouble_is_503_then_nothing_fails_after_recovery(env: Env, fault: str) -> None:
    party = seed_party(env.live)
    assert env.many_infos(party) == [200] * 12  # the pool holds several connections now
    before = env.rows()
    getattr(env.proxy, fault)()
    try:
        assert_503(env.request(party))
        assert_503(env.info(party))
        # A route that needs no database still works.
        r = env.http.put("/devices/me", json={"token": "t"}, headers=auth(party.mitra))
        assert r.status_code == 204
    finally:
        env.proxy.recover()
    # Back: every pooled connection died meanwhile, none is handed out.
    for _ in range(3):
        assert env.many_infos(party) == [200] * 12
    assert env.rows()[2:4] == before[2:4]  # the refused request wrote no extension, no ledger
    created = env.request(party)
    assert created.status_code == 201, created.text


def test_instances_starting_together_on_an_empty_database_all_start() -> None:
    with private_postgres_database("e2e_start") as url:
        settings = Settings(jwt_secret=SECRET, database_url=url, dev_seed=True)
        servers = [LiveServer(create_app(settings)) for _ in range(3)]
        errors: list[BaseException] = []
        barrier = threading.Barrier(len(servers))

        def start(server: LiveServer) -> None:
            barrier.wait(timeout=30)
            try:
                server.start()
            except BaseException as err:
                errors.append(err)

        threads = [threading.Thread(target=start, args=(s,)) for s in servers]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        try:
            assert errors == []
            demo = auth_demo()
            for server in servers:
                r = httpx.get(f"{server.url}/chat/s-demo/info", headers=demo, timeout=HANG)
                assert r.status_code == 200, r.text
        finally:
            for server in servers:
                server.stop()


def auth_demo() -> dict[str, str]:
    from examples.fastapi_app.auth import mint_token

    return auth(mint_token("customer", "c-demo", SECRET))


async def test_seed_demo_is_idempotent_and_safe_concurrently() -> None:
    with private_postgres_database("e2e_seed") as url:
        stores = [await SqlAlchemyStore.open(url, create_schema=True) for _ in range(4)]
        runtimes = [_Runtime(store) for store in stores]
        try:
            for _ in range(3):  # concurrent seeds, again and again: all succeed
                await asyncio.gather(*(seed_demo(rt) for rt in runtimes))  # type: ignore[arg-type]
            store = stores[0]
            session, payment = await read_rows(store, "s-demo", "p-demo")
            assert session is not None
            assert payment is not None and payment.status is PaymentStatus.CONFIRMED
            # A restart does not re-confirm a payment that was used meanwhile.
            await store.seed_payment(replace(payment, status=PaymentStatus.CONSUMED))
            await asyncio.gather(*(seed_demo(rt) for rt in runtimes))  # type: ignore[arg-type]
            _, again = await read_rows(store, "s-demo", "p-demo")
            assert again is not None and again.status is PaymentStatus.CONSUMED
        finally:
            for s in stores:
                await s.aclose()


class _Runtime:
    """What seed_demo reads of a runtime."""

    def __init__(self, store: SqlAlchemyStore) -> None:
        self.store = store
        self.settings = Settings(jwt_secret=SECRET)
