"""A reject is final for money, over HTTP, with two instances of the example.

Instance A reaches PostgreSQL through a loopback proxy that delays every
chunk (a slow link), sweeps every 50 ms and arms the in-process timer of the
requests made on it: the auto-approvals come from A, holding their row locks
for many milliseconds.  Instance B does not sweep; the mitra's socket is on B,
with heartbeats, so as A sees it the mitra is connected and online and every
timeout would approve and charge.  Each round a fresh party requests on A and
the mitra rejects on B at the deadline plus an offset from 0 to 240 ms.

Each round must hold the rule of ``docs/late-answers.md``: a reject answered
anything but "already resolved" (409 ``EXTENSION_RESOLVED``) is never
followed by a charge: the extension not accepted, the payment not consumed,
no ledger row, the session not extended.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy.engine import make_url
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from extension_fsm import ExtensionStatus, Participant, PaymentStatus
from extension_fsm.adapters.sqlalchemy import SqlAlchemyStore
from tests.ci import IN_CI
from tests.e2e.instances import Instance, open_socket, seed_party_in, start_instance
from tests.e2e.parties import Party, auth
from tests.fakes.fcm_server import FakeFcm
from tests.fakes.redis_env import connect, new_prefix, redis_url, wipe
from tests.fakes.tcp_proxy import TcpProxy
from tests.fakes.waiting import eventually
from tests.integration.sql_support import private_postgres_database

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.timeout(900)]

#: seconds each chunk waits on A's link to PostgreSQL
LINK_DELAY = 0.01
#: when the reject is sent, after the deadline (seconds): across A's timeout
#: and sweeps (each some round trips of 20 ms and more on its slow link)
OFFSETS = [n * 0.015 for n in range(17)]
ROUNDS = len(OFFSETS) * (3 if IN_CI else 2)
#: hang guards, never speed checks
HANG = 60.0
SETTLE = 60.0


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    client = await connect()  # skips, or fails under CI, when Redis is absent
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def database(redis: Redis) -> AsyncIterator[tuple[str, SqlAlchemyStore]]:
    with private_postgres_database("latehttp") as url:
        store = await SqlAlchemyStore.open(url, create_schema=True)
        try:
            yield url, store
        finally:
            await store.aclose()


async def _heartbeat(ws: ClientConnection) -> None:
    with contextlib.suppress(ConnectionClosed):
        while True:
            await ws.send("heartbeat")
            await asyncio.sleep(1.0)


async def _online(redis: Redis, prefix: str, party: Party) -> None:
    """Until the mitra's socket is announced and the mitra flagged online."""
    sock = f"{prefix}sock:s:{party.session_id}:{Participant.MITRA.value}"
    online = f"{prefix}online:{party.mitra_id}"

    async def ready() -> bool:
        announced = await redis.zrangebyscore(sock, time.time(), "+inf")
        return bool(announced) and bool(await redis.exists(online))

    await eventually(ready, within=SETTLE)


async def _round(
    http: httpx.AsyncClient,
    a: Instance,
    b: Instance,
    store: SqlAlchemyStore,
    redis: Redis,
    prefix: str,
    offset: float,
    outcomes: dict[str, int],
) -> list[str]:
    """One request on A and a reject on B ``offset`` s after its deadline;
    what in the outcome breaks the rule (``outcomes`` counts what it was told)."""
    party = await seed_party_in(store)
    (before,) = (await store.dump(session_ids=[party.session_id])).sessions
    async with await open_socket(b, party, Participant.MITRA) as mitra_ws:
        beat = asyncio.create_task(_heartbeat(mitra_ws))
        try:
            await _online(redis, prefix, party)
            r = await http.post(
                f"{a.url}/chat/{party.session_id}/extensions",
                json={
                    "duration_minutes": 30,
                    "price": 25000,
                    "extension_payment_session_id": party.payment_id,
                },
                headers=auth(party.customer),
            )
            assert r.status_code == 201, r.text
            ext_id = r.json()["id"]
            deadline = datetime.fromisoformat(r.json()["expires_at"]).timestamp()
            await asyncio.sleep(max(0.0, deadline + offset - time.time()))
            answer = await http.post(
                f"{b.url}/chat/{party.session_id}/extensions/{ext_id}/respond",
                json={"accepted": False},
                headers=auth(party.mitra),
            )

            async def resolved() -> bool:
                dump = await store.dump(session_ids=[party.session_id])
                return all(e.status is not ExtensionStatus.PENDING for e in dump.extensions)

            await eventually(resolved, within=SETTLE, step=0.1)
        finally:
            beat.cancel()
            await asyncio.gather(beat, return_exceptions=True)
    dump = await store.dump(session_ids=[party.session_id], payment_ids=[party.payment_id])
    (ext,) = dump.extensions
    (payment,) = dump.payments
    (session,) = dump.sessions
    charges = [e for e in dump.ledger if e.extension_id == ext_id]
    told_resolved = answer.status_code == 409 and "already resolved" in answer.text
    key = f"{answer.status_code} {answer.json().get('message', answer.json().get('status'))}"
    outcomes[key] = outcomes.get(key, 0) + 1
    broken: list[str] = []
    if answer.status_code not in (200, 409):
        broken.append(f"answered {answer.status_code}: {answer.text}")
    if not told_resolved:
        told = f"{answer.status_code} {answer.text}"
        if ext.status is ExtensionStatus.ACCEPTED:
            broken.append(f"told {told}, then approved")
        if payment.status is PaymentStatus.CONSUMED or charges:
            broken.append(f"told {told}, then charged")
        if session.expires_at != before.expires_at:
            broken.append(f"told {told}, then the session was extended")
    if len(charges) > 1:
        broken.append(f"charged {len(charges)} times")
    return broken


async def test_late_reject_race_over_http_with_two_instances(
    database: tuple[str, SqlAlchemyStore],
    fcm: FakeFcm,
    creds: Path,
    redis: Redis,
    tmp_path: Path,
) -> None:
    url, store = database
    target = make_url(url)
    proxy = TcpProxy(target.host or "127.0.0.1", target.port or 5432, delay=LINK_DELAY).start()
    slow_url = target.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    prefix = new_prefix()
    common = {
        "redis_url": redis_url(),
        "prefix": prefix,
        "fcm_credentials": creds,
        "fcm_endpoint": fcm.url,
        "log_dir": tmp_path,
        "timeout_seconds": "1",
        "presence_ttl": "5",
        "socket_ttl": "30",
    }
    a = start_instance("A", database_url=slow_url, sweep_interval="0.05", **common)  # type: ignore[arg-type]
    failures: list[str] = []
    outcomes: dict[str, int] = {}
    try:
        b = start_instance("B", database_url=url, sweep="false", **common)  # type: ignore[arg-type]
        try:
            async with httpx.AsyncClient(timeout=HANG) as http:
                for n in range(ROUNDS):
                    offset = OFFSETS[n % len(OFFSETS)]
                    broken = await _round(http, a, b, store, redis, prefix, offset, outcomes)
                    if broken:
                        failures.append(f"round {n} (+{offset * 1000:.0f} ms): {broken}")
        finally:
            b.close()
    finally:
        a.close()
        proxy.stop()
        await wipe(redis, prefix)
    print(f"late reject race over HTTP: {outcomes}")  # shown with -s
    assert not failures, f"{len(failures)} of {ROUNDS} rounds broke the rule:\n" + "\n".join(
        failures
    )
