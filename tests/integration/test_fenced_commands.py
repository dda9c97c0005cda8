"""Fenced commands: every session-timer command and payment event carries its
outbox row's ``seq`` (commit order within the session), and the shipped Redis
session timer never lets an older command land after a newer one, even when a
write held up on a stalled connection reaches Redis late."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from sqlalchemy import create_engine, text

from extension_fsm.adapters.clock import SystemClock
from extension_fsm.adapters.memory import (
    MemoryPaymentEvents,
    MemoryPush,
    MemorySessionTimer,
    MemorySockets,
    MemoryStore,
)
from extension_fsm.adapters.redis_host import RedisStreamSessionTimer
from extension_fsm.adapters.sqlalchemy import SqlAlchemyStore
from extension_fsm.migrate import upgrade
from extension_fsm.model import (
    ClearClosureGrace,
    Effect,
    FailureCause,
    PaymentFailed,
    SessionExpiryExtended,
    StartClosureGrace,
)
from extension_fsm.outbox import OutboxDispatcher, encode_effects
from extension_fsm.ports import Store
from tests.fakes.redis_env import connect, new_prefix, redis_relay, wipe
from tests.fakes.tcp_proxy import TcpProxy
from tests.fakes.waiting import eventually
from tests.integration.sql_support import private_postgres_database

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
GRACE_END = T0 + timedelta(minutes=5)
EXPIRES = T0 + timedelta(minutes=30)


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    with private_postgres_database("fenced") as url:
        yield url


@pytest.fixture
async def redis() -> AsyncIterator[tuple[Redis, str]]:
    client = await connect()
    prefix = new_prefix()
    yield client, prefix
    await wipe(client, prefix)
    await client.aclose()


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    relay = redis_relay()
    yield relay
    relay.stop()


async def _commit(store: Store, effects: list[Effect]) -> None:
    """Write ``effects``' outbox rows in one commit, as a decision does."""
    rows = encode_effects(effects, datetime.now(UTC), lambda: uuid.uuid4().hex)
    async with store.unit_of_work() as uow:
        await uow.write_batch(None, None, None, None, [], rows)
        await uow.commit()


def _dispatcher(store: Store, timer: object, payments: object | None = None) -> OutboxDispatcher:
    return OutboxDispatcher(
        store.outbox,
        clock=SystemClock(),
        sockets=MemorySockets(),
        push=MemoryPush(),
        session_timer=timer,  # type: ignore[arg-type]
        payment_events=payments,  # type: ignore[arg-type]
        call_timeout=0.3,
        lease_seconds=5.0,
        base_backoff=0.01,
        max_backoff=0.05,
    )


async def _entries(client: Redis, stream: str) -> list[dict[str, str]]:
    return [
        {k.decode(): v.decode() for k, v in fields.items()}
        for _, fields in await client.xrange(stream)
    ]


async def test_fenced_commands_a_stalled_start_landing_late_is_dropped(
    pg_url: str, redis: tuple[Redis, str], proxy: TcpProxy
) -> None:
    """[start, clear, expiry] with the first start held on a stalled connection
    and released last: the stream never ends with that stale start."""
    direct, prefix = redis
    store = await SqlAlchemyStore.open(
        pg_url, create_schema=True, table_prefix=f"f{uuid.uuid4().hex[:8]}_", clock="local"
    )
    client = Redis.from_url(
        f"redis://127.0.0.1:{proxy.port}/0", socket_connect_timeout=2, retry=Retry(NoBackoff(), 0)
    )
    timer = RedisStreamSessionTimer(client, prefix=prefix)
    dispatcher = _dispatcher(store, timer)
    try:
        await client.ping()  # one open link in the pool: the one to stall
        proxy.stall_open_links()
        await _commit(store, [StartClosureGrace("s1", GRACE_END)])
        first = await dispatcher.dispatch_due()
        assert (first.delivered, first.retried) == (0, 1)  # timed out on the stalled link

        async def start_delivered() -> bool:
            return (await dispatcher.dispatch_due()).delivered == 1

        await eventually(start_delivered)  # the retry, on a fresh link
        await _commit(store, [ClearClosureGrace("s1"), SessionExpiryExtended("s1", EXPIRES)])
        later = await dispatcher.dispatch_due()
        assert later.delivered == 2

        proxy.recover()  # the held start reaches Redis now, after the others

        # The documented keys (read directly: the same test shows the stale
        # start landing last on an adapter without the fence).
        stream, stale = f"{prefix}session_timer", f"{prefix}session_timer:stale"

        async def stale_arrived() -> bool:
            dropped = int(await direct.get(stale) or 0)
            return dropped > 0 or int(await direct.xlen(stream)) > 3

        await eventually(stale_arrived)
        entries = await _entries(direct, stream)
        actions = [e["action"] for e in entries]
        assert actions == ["start_closure_grace", "clear_closure_grace", "expiry_extended"]
        seqs = [int(e["seq"]) for e in entries]
        assert seqs == sorted(seqs) and len(set(seqs)) == 3
        assert int(await direct.get(stale) or 0) == 1
        assert int(await direct.get(f"{prefix}session_timer:seq:s1") or 0) == seqs[-1]
    finally:
        await client.aclose()
        await store.aclose()


async def test_fenced_commands_the_fence_drops_repeats_and_older_seqs(
    redis: tuple[Redis, str],
) -> None:
    client, prefix = redis
    timer = RedisStreamSessionTimer(client, prefix=prefix)
    await timer.start_closure_grace("s1", GRACE_END, seq=5)
    await timer.clear_closure_grace("s1", seq=5)  # a repeat of seq 5
    await timer.expiry_extended("s1", EXPIRES, seq=3)  # older
    await timer.start_closure_grace("s2", GRACE_END, seq=1)  # another session's own fence
    await timer.clear_closure_grace("s1", seq=9)

    entries = await _entries(client, timer.stream)
    assert [(e["session_id"], e["action"], e["seq"]) for e in entries] == [
        ("s1", "start_closure_grace", "5"),
        ("s2", "start_closure_grace", "1"),
        ("s1", "clear_closure_grace", "9"),
    ]
    assert entries[0]["at"] == GRACE_END.isoformat() and entries[2]["at"] == ""
    assert int(await client.get(timer.stale_key) or 0) == 2
    assert int(await client.pttl(timer.fence_key("s1"))) > 0  # kept, but not forever


async def test_fenced_commands_a_seq_that_is_not_a_number_is_refused(
    redis: tuple[Redis, str],
) -> None:
    client, prefix = redis
    timer = RedisStreamSessionTimer(client, prefix=prefix)
    for bad in (0, -1, True):
        with pytest.raises(Exception, match="seq must be") as caught:
            await timer.clear_closure_grace("s1", seq=bad)
        assert getattr(caught.value, "retryable", None) is False
    assert int(await client.xlen(timer.stream)) == 0


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    if request.param == "memory":
        yield MemoryStore()
        return
    url = "sqlite://" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    opened = await SqlAlchemyStore.open(
        url, create_schema=True, table_prefix=f"f{uuid.uuid4().hex[:8]}_", clock="local"
    )
    try:
        yield opened
    finally:
        await opened.aclose()


async def test_fenced_commands_carry_seq_in_commit_order(store: Store) -> None:
    """Every store numbers the rows; the timer and the payment side hear each
    command's and event's ``seq``, growing with the commits of the session."""
    timer, payments = MemorySessionTimer(), MemoryPaymentEvents()
    dispatcher = _dispatcher(store, timer, payments)
    failed = PaymentFailed("s1", "e1", "p1", "c1", 100, FailureCause.EXTENSION_REJECTED, T0)
    await _commit(store, [StartClosureGrace("s1", GRACE_END), failed])
    await _commit(store, [ClearClosureGrace("s1"), SessionExpiryExtended("s1", EXPIRES)])

    async def all_delivered() -> bool:
        await dispatcher.dispatch_due()
        return len(timer.calls) == 3 and len(payments.events) == 1

    await eventually(all_delivered)
    assert [c[0] for c in timer.calls] == [
        "start_closure_grace",
        "clear_closure_grace",
        "expiry_extended",
    ]
    assert timer.seqs == sorted(timer.seqs) and len(set(timer.seqs)) == 3
    (event,) = payments.events
    assert event == failed and event.seq is not None  # seq is not part of its identity
    assert timer.seqs[0] < event.seq < timer.seqs[1]  # written between the two commits


def _seqs_after_deleting_every_row(url: str, table: str) -> tuple[int, int]:
    """Insert a row, delete every row, insert another: both seqs."""
    engine = create_engine(url)
    insert = text(
        f"INSERT INTO {table} (id, kind, dedupe_key, payload, created_at, available_at)"
        " VALUES (:id, 'session_timer', 'k', '{}', :at, :at)"
    )
    try:
        with engine.begin() as conn:
            conn.execute(insert, {"id": "a", "at": T0})
            first = conn.execute(text(f"SELECT max(seq) FROM {table}")).scalar_one()
            conn.execute(text(f"DELETE FROM {table}"))
        with engine.begin() as conn:
            conn.execute(insert, {"id": "b", "at": T0})
            second = conn.execute(text(f"SELECT max(seq) FROM {table}")).scalar_one()
    finally:
        engine.dispose()
    return int(first), int(second)


def test_fenced_commands_seq_is_never_handed_out_twice_after_a_migration(
    tmp_path: Path,
) -> None:
    """A host may delete old delivered rows: the next row still gets a higher
    seq, or a receiver would drop every command after as stale (migration 0005)."""
    url = f"sqlite:///{tmp_path / 'fence.db'}"
    upgrade(url)
    first, second = _seqs_after_deleting_every_row(url, "extension_outbox")
    assert second > first


async def test_fenced_commands_seq_is_never_handed_out_twice_on_a_created_schema(
    tmp_path: Path, pg_url: str
) -> None:
    prefix = f"f{uuid.uuid4().hex[:8]}_"
    for url in (f"sqlite:///{tmp_path / 'created.db'}", pg_url):
        store = await SqlAlchemyStore.open(url, create_schema=True, table_prefix=prefix)
        await store.aclose()
        sync_url = url.replace("postgresql://", "postgresql+psycopg://")
        first, second = _seqs_after_deleting_every_row(sync_url, f"{prefix}extension_outbox")
        assert second > first, url
