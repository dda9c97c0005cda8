"""PostgreSQL connections (SQLAlchemy's async engine on asyncpg) under attack: a caller cancelled
during any driver call, connections killed by the server, a pool of one, and
closing the store while work still holds a connection.  Every case must end
with one decision or none (never half of one, never a charge without its
acceptance), no connection left open or idle in a transaction, and a pool
that keeps serving."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import itertools
import logging
import time
import warnings
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from extension_fsm.adapters.sqlalchemy import SqlAlchemyStore
from extension_fsm.errors import ErrorCode, StorageError
from extension_fsm.invariants import check_invariants
from extension_fsm.model import ExtensionStatus, Participant
from extension_fsm.simulator import World, make_payment, make_session

pytestmark = pytest.mark.postgres

#: a guard against a hang: not a speed being measured
BOUND = 60
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _conninfo(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _backends(url: str) -> list[str]:
    """The state of every client connection to ``url``'s database but this one."""
    with psycopg.connect(_conninfo(url), autocommit=True, connect_timeout=5) as conn:
        rows = conn.execute(
            "SELECT coalesce(state, '') FROM pg_stat_activity WHERE datname = current_database()"
            " AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
        ).fetchall()
    return [str(r[0]) for r in rows]


def _settled(url: str, ok: Callable[[list[str]], bool]) -> list[str]:
    """The backends once ``ok`` holds for them (a closed socket ends its backend
    a moment later), or the last ones seen after a bounded wait."""
    deadline = time.monotonic() + 15
    while True:
        seen = _backends(url)
        if ok(seen) or time.monotonic() > deadline:
            return seen
        time.sleep(0.05)


def _kill_backends(url: str) -> int:
    with psycopg.connect(_conninfo(url), autocommit=True, connect_timeout=5) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            " AND backend_type = 'client backend'"
        ).fetchall()
    return len(rows)


def _no_open_transaction(states: list[str]) -> bool:
    return not any(s.startswith("idle in transaction") or s == "active" for s in states)


# ------------------------------------------------------------------ closing


async def test_closing_gives_up_on_work_holding_a_connection_after_the_grace(
    pg_url: str,
) -> None:
    """``aclose(grace=…)`` bounds the wait on the pool (it once waited a
    fixed 10 s whatever the grace); the unit of work left open then fails with
    a retryable error, writes nothing, and leaves no connection behind."""
    await asyncio.to_thread(_settled, pg_url, lambda s: not s)
    store = await SqlAlchemyStore.open(pg_url, create_schema=True, table_prefix="g_", clock="local")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        async with store.unit_of_work() as uow:
            await uow.execute(text("SELECT 1"))
            closing = asyncio.ensure_future(store.aclose(grace=0.2))
            # The unit of work never ends by itself: only the grace lets the
            # close return (8 s: far above the grace, below the old fixed 10 s).
            await asyncio.wait_for(asyncio.shield(closing), 8)
            with pytest.raises(StorageError) as failed:
                await uow.execute(text("SELECT 2"))
            assert failed.value.retryable
        gc.collect()
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []
    assert await asyncio.to_thread(_settled, pg_url, lambda s: not s) == []
    with pytest.raises(StorageError):
        async with store.unit_of_work():
            pass
    await store.aclose()  # twice: nothing to do


async def test_every_call_after_close_is_refused_and_opens_no_connection(pg_url: str) -> None:
    store = await SqlAlchemyStore.open(pg_url, create_schema=True, table_prefix="c_", clock="local")
    await store.seed_session(make_session("s1", expires_at=NOW + timedelta(days=3650)))
    await store.aclose()
    await store.aclose()
    calls: list[Callable[[], Awaitable[Any]]] = [
        lambda: store.seed_session(make_session("s2", expires_at=NOW)),
        lambda: store.seed_payment(make_payment("p2")),
        store.dump,
        store.create_schema,
        lambda: store.outbox.claim(NOW, 5, 30.0),
        lambda: store.outbox.claim(NOW, 5, 30.0, ids=["x"]),
        lambda: store.outbox.mark_delivered(["x"], NOW),
        lambda: store.outbox.mark_retry("x", NOW, "e"),
        lambda: store.outbox.mark_dead("x", NOW, "e"),
    ]
    for call in calls:
        with pytest.raises(StorageError):
            await asyncio.wait_for(call(), BOUND)
    with pytest.raises(StorageError):
        async with store.unit_of_work():
            pass
    assert await asyncio.to_thread(_settled, pg_url, lambda s: not s) == []


async def test_a_close_cancelled_while_it_waits_leaves_no_connection_open(pg_url: str) -> None:
    """A shutdown that gives up on ``aclose`` (its own timeout cancels it) must
    not drop the pool with its sockets open; closing again finishes the job."""
    await asyncio.to_thread(_settled, pg_url, lambda s: not s)
    store = await SqlAlchemyStore.open(pg_url + "?pool_size=3", clock="local")

    async def one() -> None:
        async with store.unit_of_work() as uow:
            await uow.execute(text("SELECT 1"))
            await asyncio.sleep(0.05)  # overlap, so the pool opens several

    await asyncio.wait_for(asyncio.gather(*(one() for _ in range(3))), BOUND)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        # The unit of work still holding its connection ends as usual (rolled
        # back); its connection is closed, not given back to the pool.
        async with store.unit_of_work() as uow:
            await uow.execute(text("SELECT 1"))
            closing = asyncio.ensure_future(store.aclose(grace=30))
            await asyncio.sleep(0.2)
            assert not closing.done()  # waiting for this unit of work
            closing.cancel()
            with pytest.raises(asyncio.CancelledError):
                await closing
            with pytest.raises(StorageError):  # refused all the same
                async with store.unit_of_work():
                    pass
        await asyncio.wait_for(store.aclose(grace=1), BOUND)
        gc.collect()
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []
    assert await asyncio.to_thread(_settled, pg_url, lambda s: not s) == []


async def test_a_second_close_returns_only_when_the_first_has_closed(pg_url: str) -> None:
    """Two shutdown paths closing the same store (a lifespan and a signal
    handler, say): neither may return while a connection is still open."""
    await asyncio.to_thread(_settled, pg_url, lambda s: not s)
    store = await SqlAlchemyStore.open(pg_url, clock="local")
    release = asyncio.Event()

    async def holder() -> None:
        async with store.unit_of_work() as uow:
            await uow.execute(text("SELECT 1"))
            await release.wait()
            await uow.commit()

    held = asyncio.ensure_future(holder())
    await asyncio.sleep(0.2)  # the unit of work holds its connection
    first = asyncio.ensure_future(store.aclose(grace=30))
    await asyncio.sleep(0.1)
    second = asyncio.ensure_future(store.aclose(grace=30))
    await asyncio.sleep(0.3)
    assert not first.done() and not second.done()  # both wait for the holder
    release.set()
    await asyncio.wait_for(asyncio.gather(held, second), BOUND)
    assert first.done() or await asyncio.wait_for(first, BOUND) is None
    assert await asyncio.to_thread(_settled, pg_url, lambda s: not s) == []


# ------------------------------------------------------------- cancellation

#: set in the task under attack (and inherited by the tasks it starts)
_ARMED: contextvars.ContextVar[bool] = contextvars.ContextVar("armed", default=False)


class CancelAtCall:
    """Cancels ``victim`` while its ``target``-th driver call (acquire, or any
    statement: BEGIN, reads, writes, COMMIT) is in flight."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.target = 0
        self.seen = 0
        self.victim: asyncio.Task[Any] | None = None
        self.cancelled = False
        for owner, name in (  # what SQLAlchemy's asyncpg adapter calls
            (asyncpg, "connect"),
            (asyncpg.Connection, "execute"),  # BEGIN, COMMIT, ROLLBACK
            (asyncpg.Connection, "prepare"),
            (asyncpg.prepared_stmt.PreparedStatement, "fetch"),
        ):
            monkeypatch.setattr(owner, name, self._wrap(getattr(owner, name)))

    def _wrap(self, call: Any) -> Any:
        async def wrapped(*args: Any, **kwargs: Any) -> Any:
            if _ARMED.get():
                self.seen += 1
                if self.seen == self.target and self.victim is not None:
                    asyncio.get_running_loop().call_soon(self.victim.cancel)
            return await call(*args, **kwargs)

        return wrapped

    async def run(self, target: int, work: Awaitable[Any]) -> bool:
        """Run ``work``, cancelled at driver call ``target``; whether it was."""
        self.target, self.seen = target, 0

        async def armed() -> Any:
            _ARMED.set(True)
            return await work

        self.victim = asyncio.ensure_future(armed())
        try:
            await asyncio.wait_for(asyncio.shield(self.victim), BOUND)
        except asyncio.CancelledError:
            if not self.victim.cancelled():
                raise
        finally:
            self.cancelled = self.victim.cancelled()
            self.victim = None
        return self.seen >= target


async def test_a_caller_cancelled_during_any_driver_call_leaves_one_decision_or_none(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = itertools.count()
    store = await SqlAlchemyStore.open(
        pg_url + "?pool_size=3",
        create_schema=True,
        table_prefix="k_",
        clock="local",
    )
    w = World(store=store, new_id=lambda: f"k{next(ids):05d}")
    svc = w.service
    attack = CancelAtCall(monkeypatch)
    party = itertools.count()

    async def fresh() -> tuple[str, str]:
        n = next(party)
        s, p = f"s{n}", f"p{n}"
        session = make_session(s, expires_at=w.clock.now() + timedelta(minutes=30))
        await w.add_session(session)
        await w.add_payment(make_payment(p))
        w.connect(session, Participant.MITRA, on_session_socket=True, online=True)
        return s, p

    async def request(s: str, p: str) -> Any:
        return await svc.request_extension(
            session_id=s,
            customer_id="c1",
            duration_minutes=10,
            price=15000,
            extension_payment_session_id=p,
        )

    async def check(url: str) -> None:
        await w.settle()
        states = await asyncio.to_thread(_settled, url, _no_open_transaction)
        assert _no_open_transaction(states), states
        assert len(states) <= 3  # never more than pool_size
        dump = await store.dump()
        assert check_invariants(dump, now=w.clock.now()) == []
        charged = {entry.extension_id for entry in dump.ledger}
        for ext in dump.extensions:  # a charge exactly when accepted
            assert (ext.id in charged) is (ext.status is ExtensionStatus.ACCEPTED), ext
        assert len(dump.ledger) == len(charged)  # never charged twice

    try:
        for answer in ("request", True, False):
            cancelled = 0
            for target in itertools.count(1):
                s, p = await fresh()
                if answer == "request":
                    hit = await attack.run(target, request(s, p))
                else:
                    ext = await request(s, p)
                    work = svc.respond_to_extension(
                        extension_id=ext.id, session_id=s, mitra_id="m1", accepted=answer
                    )
                    hit = await attack.run(target, work)
                await check(pg_url)
                cancelled += attack.cancelled
                # The pool still serves, and the flow can be finished.
                dump = await store.dump()
                mine = [e for e in dump.extensions if e.session_id == s]
                assert len(mine) <= 1
                if answer == "request" and not mine:
                    mine = [await request(s, p)]
                if answer != "request" and mine[0].status is ExtensionStatus.PENDING:
                    await svc.respond_to_extension(
                        extension_id=mine[0].id, session_id=s, mitra_id="m1", accepted=answer
                    )
                await check(pg_url)
                if not hit:  # the call made fewer driver calls than target: all covered
                    break
            # the read and the write at least (no BEGIN, no COMMIT): each one cancelled
            assert cancelled >= 2, (answer, cancelled)
    finally:
        await w.settle()
        await store.aclose()
    assert await asyncio.to_thread(_settled, pg_url, lambda s: not s) == []


# ------------------------------------------------------ connections killed


async def test_connections_killed_by_the_server_cost_at_most_one_retryable_error(
    pg_url: str,
) -> None:
    store = await SqlAlchemyStore.open(
        pg_url + "?pool_size=2",
        create_schema=True,
        table_prefix="t_",
        clock="local",
    )
    try:
        far = NOW + timedelta(days=3650)
        await store.seed_session(make_session("s0", expires_at=far))
        # Killed while idle in the pool: the next calls do not notice.
        assert await asyncio.to_thread(_kill_backends, pg_url) >= 1
        await asyncio.sleep(0.2)
        for n in (1, 2, 3):
            await asyncio.wait_for(store.seed_session(make_session(f"s{n}", expires_at=far)), BOUND)
        assert await asyncio.wait_for(store.outbox.claim(NOW, 5, 30.0), BOUND) == []

        # Killed inside a transaction: that unit fails retryably, nothing of it is written.
        with pytest.raises(StorageError) as failed:
            async with store.unit_of_work() as uow:
                await uow.upsert(store.tables.customers, {"id": "cx", "display_name": "X"})
                await asyncio.to_thread(_kill_backends, pg_url)
                await asyncio.sleep(0.2)
                await uow.execute(text("SELECT 1"))
                await uow.commit()
        assert failed.value.retryable and failed.value.code is ErrorCode.STORAGE_UNAVAILABLE
        # Killed just before COMMIT: the same.
        with pytest.raises(StorageError) as failed:
            async with store.unit_of_work() as uow:
                await uow.upsert(store.tables.customers, {"id": "cy", "display_name": "Y"})
                await asyncio.to_thread(_kill_backends, pg_url)
                await asyncio.sleep(0.2)
                await uow.commit()
        assert failed.value.retryable
        async with store.unit_of_work() as uow:
            got = await uow.rows(text("SELECT id FROM t_customers WHERE id IN ('cx', 'cy')"))
        assert got == []
        dump = await store.dump()
        assert [s.id for s in dump.sessions] == ["s0", "s1", "s2", "s3"]
    finally:
        await store.aclose()
    assert await asyncio.to_thread(_settled, pg_url, lambda s: not s) == []


# --------------------------------------------------------------- pool of one


async def test_a_pool_of_one_runs_the_whole_flow_and_bounds_the_waits(pg_url: str) -> None:
    """Nothing takes a second connection while holding one (a pool of one would
    wait on itself), and callers beyond the pool get a 503 after the pool
    timeout rather than hanging."""
    ids = itertools.count()
    store = await SqlAlchemyStore.open(
        pg_url + "?pool_size=1&pool_timeout=1",
        create_schema=True,
        table_prefix="o_",
        clock="local",
    )
    w = World(store=store, new_id=lambda: f"o{next(ids):04d}")
    try:
        svc = w.service
        for n, accepted in ((1, True), (2, False)):
            session = make_session(f"s{n}", expires_at=w.clock.now() + timedelta(minutes=30))
            await w.add_session(session)
            await w.add_payment(make_payment(f"p{n}"))
            w.connect(session, Participant.MITRA, on_session_socket=True, online=True)
            ext = await asyncio.wait_for(
                svc.request_extension(
                    session_id=f"s{n}",
                    customer_id="c1",
                    duration_minutes=10,
                    price=15000,
                    extension_payment_session_id=f"p{n}",
                ),
                BOUND,
            )
            await w.settle()
            await asyncio.wait_for(
                svc.respond_to_extension(
                    extension_id=ext.id, session_id=f"s{n}", mitra_id="m1", accepted=accepted
                ),
                BOUND,
            )
            await w.settle()
        dump = await store.dump()
        assert check_invariants(dump, now=w.clock.now()) == []
        assert len(dump.ledger) == 1 and all(done for _, done in dump.outbox)

        release = asyncio.Event()

        async def hold() -> None:
            async with store.unit_of_work() as uow:
                await uow.execute(text("SELECT 1"))
                await release.wait()

        holder = asyncio.ensure_future(hold())
        await asyncio.sleep(0.1)
        waiting = [asyncio.ensure_future(store.dump()) for _ in range(5)]
        waiting.append(asyncio.ensure_future(store.outbox.claim(NOW, 5, 30.0)))
        outcomes = await asyncio.wait_for(asyncio.gather(*waiting, return_exceptions=True), BOUND)
        for outcome in outcomes:
            assert isinstance(outcome, StorageError) and outcome.retryable, outcome
        release.set()
        await asyncio.wait_for(holder, BOUND)
        assert (await store.dump()).ledger == dump.ledger  # served again once free
    finally:
        await w.settle()
        await store.aclose()


# ------------------------------------------------------------- URL options


@pytest.mark.parametrize(
    ("options", "app_name"),
    [
        ("prepared_statement_cache_size=0", None),
        ("statement_cache_size=0&application_name=efsm-test", "efsm-test"),
    ],
    ids=["prepared_statement_cache_size", "statement_cache_size+application_name"],
)
async def test_url_options_of_hosts_and_pgbouncer_work_on_both_paths(
    pg_url: str, options: str, app_name: str | None
) -> None:
    """``?prepared_statement_cache_size=0`` (SQLAlchemy's asyncpg option, what
    PgBouncer setups use), asyncpg's own ``?statement_cache_size=0`` and
    ``?application_name=`` (a libpq parameter, the usual way to name a service
    in ``pg_stat_activity``) each reached ``asyncpg.connect`` unconverted: a
    ``TypeError`` on every call.  A cache size of 0 turns off asyncpg's
    named prepared statements; the library's own
    ``statement_timeout`` is kept beside a given ``application_name``."""
    store = await SqlAlchemyStore.open(f"{pg_url}?{options}&pool_size=1", clock="local")
    try:
        for _ in range(3):
            async with store.unit_of_work() as uow:
                assert (await uow.execute(text("SELECT 1"))).scalar() == 1
                if app_name is not None:
                    name = await uow.execute(text("SELECT current_setting('application_name')"))
                    assert name.scalar() == app_name
                timeout = await uow.execute(text("SELECT current_setting('statement_timeout')"))
                assert timeout.scalar() == "10s"
    finally:
        await store.aclose()


# -------------------------------------------- engine work outliving the grace


async def test_engine_work_outliving_the_grace_closes_its_own_connection(pg_url: str) -> None:
    """Work on SQLAlchemy's engine that is still running when the grace runs
    out (the outbox's autocommit calls; ``run_sync``, which
    status and schema work use on both paths) closes its connection when it
    ends: given back to the disposed pool it stayed open until the GC."""
    await asyncio.to_thread(_settled, pg_url, lambda s: not s)

    def slow(conn: Any) -> None:
        conn.exec_driver_sql("SELECT pg_sleep(1)")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        store = await SqlAlchemyStore.open(pg_url, clock="local")
        running = asyncio.ensure_future(store.database.run_sync(slow))
        await asyncio.sleep(0.3)  # the statement is running
        await asyncio.wait_for(store.aclose(grace=0.1), BOUND)
        await asyncio.wait_for(running, BOUND)
        assert await asyncio.to_thread(_settled, pg_url, lambda s: not s) == []

        store = await SqlAlchemyStore.open(pg_url, clock="local")
        running = asyncio.ensure_future(store.database.one_statement(slow))
        await asyncio.sleep(0.3)  # the outbox's kind of call: one autocommit statement
        await asyncio.wait_for(store.aclose(grace=0.1), BOUND)
        await asyncio.wait_for(running, BOUND)
        assert await asyncio.to_thread(_settled, pg_url, lambda s: not s) == []
        gc.collect()
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []


# ------------------------------------- closing under a background delivery


class HeldPush:
    """A push that waits until released (a slow provider), then succeeds."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.sent = 0

    async def send(self, participant: Any, user_id: str, message: Any) -> None:
        self.started.set()
        await self.release.wait()
        self.sent += 1


async def test_closing_the_store_under_a_background_delivery_loses_nothing(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The store closed (before the service, against the advice) while a
    background delivery waits on a push: the delivery's mark is refused and
    logged, no connection stays open, and its rows stay in the outbox for
    the next dispatch (at least once)."""
    from extension_fsm import ExtensionService
    from extension_fsm.adapters.clock import SystemClock
    from extension_fsm.adapters.config import StaticConfig

    # A store closed first is logged at INFO (rows handed back, as on a crash).
    caplog.set_level(logging.INFO, logger="extension_fsm.outbox")
    from extension_fsm.adapters.memory import (
        MemoryPresence,
        MemorySessionTimer,
        MemorySockets,
    )

    prefix = "b_"
    store = await SqlAlchemyStore.open(
        pg_url, create_schema=True, table_prefix=prefix, clock="local"
    )
    push = HeldPush()
    service = ExtensionService(
        store,
        clock=SystemClock(),
        config=StaticConfig(30, "auto_approve", 60),
        sockets=MemorySockets(),
        presence=MemoryPresence(),
        push=push,
        session_timer=MemorySessionTimer(),
    )
    now = datetime.now(UTC)
    await store.seed_session(make_session("s1", expires_at=now + timedelta(minutes=30)))
    await store.seed_payment(make_payment("p1"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        await service.request_extension(
            session_id="s1",
            customer_id="c1",
            duration_minutes=10,
            price=15000,
            extension_payment_session_id="p1",
        )
        await asyncio.wait_for(push.started.wait(), BOUND)  # claimed, now pushing
        assert service.dispatcher.in_flight == 1
        await asyncio.wait_for(store.aclose(grace=1), BOUND)
        push.release.set()
        await asyncio.wait_for(service.dispatcher.drain(), BOUND)
        await service.aclose()
        gc.collect()
    assert push.sent >= 1
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []
    assert any("left in the outbox" in r.getMessage() for r in caplog.records)
    assert await asyncio.to_thread(_settled, pg_url, lambda s: not s) == []

    again = await SqlAlchemyStore.open(pg_url, table_prefix=prefix, clock="local")
    try:
        outbox = (await again.dump()).outbox
        assert outbox and not any(done for _, done in outbox)  # nothing marked
        # the lease runs out: the next dispatch claims them again
        later = datetime.now(UTC) + timedelta(hours=1)
        assert len(await again.outbox.claim(later, 100, 30.0)) == len(outbox)
    finally:
        await again.aclose()


async def test_committing_a_failed_transaction_is_an_error_not_a_commit(pg_url: str) -> None:
    """A statement's error caught inside the unit of work, then ``commit()``:
    PostgreSQL answers the COMMIT of the aborted transaction with ROLLBACK.
    Both paths reported that as a successful commit (nothing written)."""
    prefix = "fe_"
    store = await SqlAlchemyStore.open(
        pg_url, create_schema=True, table_prefix=prefix, clock="local"
    )
    try:
        async with store.unit_of_work() as uow:
            await uow.upsert(store.tables.customers, {"id": "c1", "display_name": "X"})
            with pytest.raises(StorageError):
                await uow.execute(text("SELECT 1/0"))
            with pytest.raises(StorageError) as failed:
                await uow.commit()
            assert not failed.value.retryable
        async with store.unit_of_work() as uow:  # the connection serves on
            assert await uow.rows(text(f"SELECT id FROM {prefix}customers")) == []
            await uow.upsert(store.tables.customers, {"id": "c2", "display_name": "Y"})
            await uow.commit()
        async with store.unit_of_work() as uow:
            got = await uow.rows(text(f"SELECT id FROM {prefix}customers"))
        assert [r.id for r in got] == ["c2"]
    finally:
        await store.aclose()
