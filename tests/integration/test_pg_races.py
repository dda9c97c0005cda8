"""PostgreSQL races with real concurrency: two worker threads, each with its own
event loop, engine, connections and ``ExtensionService``, released together
by a barrier.  Every trial must end with exactly one outcome."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable, Iterator
from datetime import timedelta

import pytest

from extension_fsm.adapters.sqlalchemy import SqlAlchemyStore
from extension_fsm.errors import ExtensionError
from extension_fsm.invariants import check_invariants
from extension_fsm.model import (
    Extension,
    ExtensionStatus,
    MessageType,
    PaymentStatus,
    TimeoutAction,
)
from extension_fsm.ports import StoreDump
from tests.ci import IN_CI
from tests.integration.pg_workers import T0, Worker, race, seed
from tests.integration.sql_support import private_postgres_database

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

TRIALS = 500 if IN_CI else 60


def trials(w: Worker) -> int:
    return TRIALS


@pytest.fixture(scope="module")
def workers() -> Iterator[tuple[Worker, Worker]]:
    """Two workers, each with its own store and service, on one database."""
    with private_postgres_database("races") as url:

        async def create() -> None:
            store = await SqlAlchemyStore.open(url, create_schema=True, clock="local")
            await store.aclose()

        asyncio.run(create())
        a, b = Worker(url), Worker(url)
        try:
            yield a, b
        finally:
            a.close()
            b.close()


def resolve(w: Worker, action: str, ext: Extension) -> Callable[[], Awaitable[object]]:
    """Worker ``w``'s call for ``action``: a sweep just after the deadline, or an
    answer just before it."""
    if action == "sweep":
        w.clock.at = ext.expires_at
        return w.service.sweep_due
    w.clock.at = ext.expires_at - timedelta(seconds=1)
    return lambda: w.service.respond_to_extension(
        extension_id=ext.id, session_id=ext.session_id, mitra_id="m1", accepted=action == "accept"
    )


def ask(w: Worker, session_id: str, payment_id: str) -> Callable[[], Awaitable[Extension]]:
    """Worker ``w``'s extension request for ``session_id`` paid by ``payment_id``."""
    customer = session_id.rsplit("s", 1)[0] + "c"
    return lambda: w.service.request_extension(
        session_id=session_id,
        customer_id=customer,
        duration_minutes=5,
        price=15000,
        extension_payment_session_id=payment_id,
    )


def responses_for(dump: StoreDump, extension_id: str) -> int:
    kind = MessageType.EXTENSION_RESPONSE.value
    return sum(
        1 for m, _ in dump.outbox if m.dedupe_key.startswith(extension_id) and kind in m.dedupe_key
    )


def assert_healthy(dump: StoreDump) -> None:
    assert check_invariants(dump, now=T0) == []


def test_accept_reject_timeout_from_two_workers(workers: tuple[Worker, Worker]) -> None:
    a, b = workers
    a.config.timeout_action = b.config.timeout_action = TimeoutAction.AUTO_APPROVE
    a.presence.online = b.presence.online = {}  # auto-approve only if online: nobody is
    actions = ["accept", "reject", "sweep"]
    pairs = list(itertools.product(actions, actions))
    expected: dict[str, str] = {}
    for trial, (x, y) in zip(range(trials(a)), itertools.cycle(pairs), strict=False):
        tag = f"r{trial}_"
        a.clock.at = b.clock.at = T0
        a.run(seed(a, tag))
        ext = a.run(
            a.service.request_extension(
                session_id=f"{tag}s0",
                customer_id=f"{tag}c",
                duration_minutes=5,
                price=15000,
                extension_payment_session_id=f"{tag}p0",
            )
        )

        race(a, b, resolve(a, x, ext), resolve(b, y, ext))
        expected[ext.id] = f"{x}/{y}"
    dump = a.run(a.store.dump())
    assert_healthy(dump)
    by_id = {e.id: e for e in dump.extensions}
    payments = {p.id: p for p in dump.payments}
    charged = [entry.extension_id for entry in dump.ledger]
    for ext_id, pair in expected.items():
        e = by_id[ext_id]
        assert e.status is not ExtensionStatus.PENDING, pair
        if e.status is ExtensionStatus.ACCEPTED:
            assert "accept" in pair
        elif e.status is ExtensionStatus.REJECTED:
            assert "reject" in pair
        else:
            assert "sweep" in pair
        consumed = payments[e.payment_session_id].status is PaymentStatus.CONSUMED
        assert consumed == (e.status is ExtensionStatus.ACCEPTED), pair
        assert charged.count(ext_id) == (1 if e.status is ExtensionStatus.ACCEPTED else 0), pair
        assert responses_for(dump, ext_id) == 1, pair
    assert len(charged) == len(set(charged))


def test_two_requests_for_one_session(workers: tuple[Worker, Worker]) -> None:
    a, b = workers
    a.clock.at = b.clock.at = T0
    for trial in range(trials(a)):
        tag = f"q{trial}_"
        a.run(seed(a, tag, payments=2))

        results = race(a, b, ask(a, f"{tag}s0", f"{tag}p0"), ask(b, f"{tag}s0", f"{tag}p1"))
        refused = [r for r in results if isinstance(r, ExtensionError)]
        assert len(refused) == 1, results
        assert refused[0].status_code == 409, refused
    dump = a.run(a.store.dump())
    assert_healthy(dump)
    per_session: dict[str, int] = {}
    for e in dump.extensions:
        if e.session_id.startswith("q"):
            per_session[e.session_id] = per_session.get(e.session_id, 0) + 1
    assert len(per_session) == trials(a) and set(per_session.values()) == {1}


def test_two_extensions_paying_with_one_payment_session(workers: tuple[Worker, Worker]) -> None:
    a, b = workers
    a.clock.at = b.clock.at = T0
    for trial in range(trials(a)):
        tag = f"p{trial}_"
        a.run(seed(a, tag, sessions=2))

        results = race(a, b, ask(a, f"{tag}s0", f"{tag}p0"), ask(b, f"{tag}s1", f"{tag}p0"))
        refused = [r for r in results if isinstance(r, ExtensionError)]
        assert len(refused) == 1, results
        assert refused[0].status_code == 409, refused
        winner = next(r for r in results if not isinstance(r, ExtensionError))
        # and the winner's acceptance consumes the payment exactly once
        a.clock.at = T0 + timedelta(seconds=1)
        a.run(
            a.service.respond_to_extension(
                extension_id=winner.id, session_id=winner.session_id, mitra_id="m1", accepted=True
            )
        )  # type: ignore[union-attr]
        a.clock.at = T0
    dump = a.run(a.store.dump())
    assert_healthy(dump)
    mine = [e for e in dump.extensions if e.session_id.startswith("p")]
    assert len(mine) == trials(a) and all(e.status is ExtensionStatus.ACCEPTED for e in mine)
    charged = [x.extension_id for x in dump.ledger]
    assert all(charged.count(e.id) == 1 for e in mine)
