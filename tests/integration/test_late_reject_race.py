"""A reject is final for money, on PostgreSQL, under real concurrency.

Two ``ExtensionService``s on one database, each on its own thread, event loop
and connection pool; one of them reaches PostgreSQL through a loopback proxy
that delays every chunk (a slow link), so its transactions hold their row
locks for many milliseconds.  The mitra is online and connected as the
sweeper sees it: a timeout would auto-approve and charge.  Just after the
deadline the sweeper sweeps while the mitra's reject (or the host's
``end_session``) arrives: both are released together and the call on the
fast link is held back by an offset swept across the slow call's whole
course (before the sweep claims the row, while it holds the lock, while it
commits, after; or, the answer being slow, around each of its statements).

The rule each round must hold (``docs/late-answers.md``): a reject told
anything but "already resolved" is never followed by a charge (no payment
consumed, no ledger row, session not extended), and a reject is told
"already resolved" whenever the extension ended accepted; ``end_session``
returns the session as it ended (extended only if the approval committed
first), and nothing is charged that it did not show.  Every round ends with
exactly one resolution, the customer told once, and the invariants hold.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import pytest
from sqlalchemy.engine import make_url

from extension_fsm import ExtensionService
from extension_fsm.adapters.config import StaticConfig
from extension_fsm.adapters.memory import (
    MemoryPresence,
    MemoryPush,
    MemorySessionTimer,
    MemorySockets,
)
from extension_fsm.adapters.sqlalchemy import SqlAlchemyStore
from extension_fsm.errors import ErrorCode, ExtensionError
from extension_fsm.invariants import check_invariants
from extension_fsm.model import (
    Extension,
    ExtensionStatus,
    MessageType,
    Participant,
    PaymentStatus,
    Session,
)
from extension_fsm.ports import StoreDump
from extension_fsm.simulator import make_payment, make_session
from tests.ci import IN_CI
from tests.fakes.tcp_proxy import TcpProxy
from tests.integration.pg_workers import T0, TIMEOUT, FixedClock, Worker, race_all, seed
from tests.integration.sql_support import private_postgres_database

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

T = TypeVar("T")

#: seconds each chunk waits on the slow link (a round trip takes twice that at least)
LINK_DELAY = 0.01
#: offsets (seconds) of the answer after the sweep starts: from "before the
#: claim" through "holding the lock" and "committing" to "after the commit"
OFFSETS = [n * 0.006 for n in range(26)]
#: rounds per test: every offset, several times over
ROUNDS = len(OFFSETS) * (4 if IN_CI else 2)
#: how late the answer is, by the answering service's clock
LATE = timedelta(milliseconds=50)
#: the seeded session's end (an approval moves it by the extension's minutes)
SESSION_END = T0 + timedelta(hours=1)
MINUTES = 5
ALREADY_RESOLVED = "already resolved"


@dataclass
class Pair:
    """The service that answers (``answerer``) and the one that sweeps; ``slow``
    names the one on the slow link."""

    answerer: Worker
    sweeper: Worker
    slow: str

    @property
    def fast(self) -> Worker:
        return self.sweeper if self.slow == "answerer" else self.answerer

    def race(self, answer: Callable[[], Awaitable[Any]], offset: float) -> tuple[Any, Any]:
        """The sweep and ``answer`` released together, the call on the fast
        link ``offset`` seconds later (the slow one takes many round trips)."""
        sweep: Callable[[], Awaitable[Any]] = self.sweeper.service.sweep_due
        if self.slow == "answerer":
            sweep = _after(offset, sweep)
        else:
            answer = _after(offset, answer)
        swept, answered = race_all([(self.sweeper, sweep), (self.answerer, answer)])
        return swept, answered


def _on_proxy(url: str, proxy: TcpProxy) -> str:
    return (
        make_url(url).set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    )


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    with private_postgres_database("latereject") as url:

        async def create() -> None:
            store = await SqlAlchemyStore.open(url, create_schema=True)
            await store.aclose()

        asyncio.run(create())
        yield url


@pytest.fixture(
    scope="module", params=["sweeper", "answerer"], ids=["slow_sweeper", "slow_answerer"]
)
def pair(request: pytest.FixtureRequest, database: str) -> Iterator[Pair]:
    """Two services on ``database``; the one named by the parameter on the slow link."""
    target = make_url(database)
    proxy = TcpProxy(target.host or "127.0.0.1", target.port or 5432, delay=LINK_DELAY).start()
    slow_url = _on_proxy(database, proxy)
    slow: str = request.param
    answerer = Worker(slow_url if slow == "answerer" else database)
    sweeper = Worker(slow_url if slow == "sweeper" else database)
    # As the sweeper sees it the mitra is there: its timeout would approve and charge.
    sweeper.sockets.connected[(Participant.MITRA, "m1")] = True
    sweeper.presence.online["m1"] = True
    try:
        yield Pair(answerer, sweeper, slow)
    finally:
        try:
            answerer.close()
            sweeper.close()
        finally:
            proxy.stop()


def _after(delay: float, call: Callable[[], Awaitable[T]]) -> Callable[[], Awaitable[T]]:
    async def later() -> T:
        await asyncio.sleep(delay)
        return await call()

    return later


def _requested(pair: Pair, tag: str) -> Extension:
    """A fresh session and payment, and a pending extension on them; both
    services' clocks then stand just after its deadline."""
    w = pair.fast
    w.clock.at = T0
    w.run(seed(w, tag))
    ext = w.run(
        w.service.request_extension(
            session_id=f"{tag}s0",
            customer_id=f"{tag}c",
            duration_minutes=MINUTES,
            price=15000,
            extension_payment_session_id=f"{tag}p0",
        )
    )
    pair.answerer.clock.at = pair.sweeper.clock.at = ext.expires_at + LATE
    return ext


def _responses(dump: StoreDump, extension_id: str) -> int:
    kind = MessageType.EXTENSION_RESPONSE.value
    return sum(
        1 for m, _ in dump.outbox if m.dedupe_key.startswith(extension_id) and kind in m.dedupe_key
    )


def _money(pair: Pair, ext: Extension, told: str) -> tuple[StoreDump, list[str]]:
    """The round's rows, and what in them breaks the rule for an answer ``told``
    its outcome (``"accepted"``: told the extension was approved and charged)."""
    dump = pair.fast.run(
        pair.fast.store.dump(session_ids=[ext.session_id], payment_ids=[ext.payment_session_id])
    )
    (row,) = [e for e in dump.extensions if e.id == ext.id]
    (payment,) = [p for p in dump.payments if p.id == ext.payment_session_id]
    (session,) = [s for s in dump.sessions if s.id == ext.session_id]
    charges = [entry for entry in dump.ledger if entry.extension_id == ext.id]
    broken: list[str] = []
    if told != "accepted":
        if row.status is ExtensionStatus.ACCEPTED:
            broken.append(f"told {told!r}, then approved")
        if payment.status is PaymentStatus.CONSUMED or charges:
            broken.append(f"told {told!r}, then charged ({payment.status}, {len(charges)} rows)")
        if session.expires_at != SESSION_END:
            broken.append(f"told {told!r}, then the session was extended")
    if row.status is ExtensionStatus.PENDING:
        broken.append("left pending")
    if len(charges) > 1:
        broken.append(f"charged {len(charges)} times")
    if _responses(dump, ext.id) != 1:
        broken.append(f"customer told {_responses(dump, ext.id)} times")
    broken += check_invariants(dump, now=ext.expires_at + LATE)
    return dump, broken


def _told(answer: Extension | ExtensionError) -> str:
    """What a reject was told: ``accepted`` for "already resolved", which is
    the answer for an extension the deadline approved first."""
    if isinstance(answer, ExtensionError):
        if answer.code is ErrorCode.EXTENSION_RESOLVED and ALREADY_RESOLVED in answer.message:
            return "accepted"
        return f"{answer.code.value}: {answer.message}"
    return f"answered {answer.status.value}"


def _report(kind: str, pair: Pair, failures: list[str], rounds: int) -> None:
    assert not failures, (
        f"{len(failures)} of {rounds} rounds broke the rule ({kind}, slow {pair.slow}):\n"
        + "\n".join(failures[:20])
    )


def test_late_reject_race_never_charges_a_reject(pair: Pair) -> None:
    failures: list[str] = []
    outcomes: dict[str, int] = {}
    for n, offset in zip(range(ROUNDS), itertools.cycle(OFFSETS), strict=False):
        ext = _requested(pair, f"lr{pair.slow[0]}{n}_")

        def reject(e: Extension = ext) -> Awaitable[Extension]:
            return pair.answerer.service.respond_to_extension(
                extension_id=e.id, session_id=e.session_id, mitra_id="m1", accepted=False
            )

        swept, answered = pair.race(reject, offset)
        assert not isinstance(swept, ExtensionError), swept
        told = _told(answered)
        # A late reject is refused as late (and times the extension out
        # uncharged) or told it came after the approval; nothing else.
        assert isinstance(answered, ExtensionError), answered
        assert answered.code is ErrorCode.EXTENSION_RESOLVED, answered
        _, broken = _money(pair, ext, told)
        outcomes[told] = outcomes.get(told, 0) + 1
        if broken:
            failures.append(f"round {n} (offset {offset * 1000:.0f} ms): {broken}")
    print(f"late reject race, slow {pair.slow}: {outcomes}")  # shown with -s
    _report("reject", pair, failures, ROUNDS)


def test_late_reject_race_end_session_shows_what_it_ended(pair: Pair) -> None:
    failures: list[str] = []
    outcomes: dict[str, int] = {}
    for n, offset in zip(range(ROUNDS), itertools.cycle(OFFSETS), strict=False):
        ext = _requested(pair, f"le{pair.slow[0]}{n}_")

        def end(e: Extension = ext) -> Awaitable[Session]:
            return pair.answerer.service.end_session(e.session_id)

        swept, ended = pair.race(end, offset)
        assert not isinstance(swept, ExtensionError), swept
        if isinstance(ended, ExtensionError):
            told = f"{ended.code.value}: {ended.message}"
        else:
            # The session as it ended: extended only if the approval came first.
            told = "accepted" if ended.expires_at != SESSION_END else "ended unextended"
        _, broken = _money(pair, ext, told)
        outcomes[told] = outcomes.get(told, 0) + 1
        if told == "accepted" and not broken:
            dump = pair.fast.run(pair.fast.store.dump(session_ids=[ext.session_id]))
            (row,) = dump.extensions
            if row.status is not ExtensionStatus.ACCEPTED:
                broken.append("end_session showed an extension that was not approved")
        if broken:
            failures.append(f"round {n} (offset {offset * 1000:.0f} ms): {broken}")
    print(f"end_session race, slow {pair.slow}: {outcomes}")  # shown with -s
    _report("end_session", pair, failures, ROUNDS)


async def test_late_reject_race_a_row_held_past_the_bound_is_a_conflict_that_decides_nothing(
    database: str,
) -> None:
    """The wait for a holder is bounded: a row held past every attempt's lock
    timeout answers ``CONFLICT`` (try again) with nothing written; asked again
    once the row is free, the late reject ends the extension uncharged."""
    import psycopg

    clock = FixedClock()
    store = await SqlAlchemyStore.open(database, clock="local")
    service = ExtensionService(
        store,
        clock=clock,
        config=StaticConfig(timeout_seconds=TIMEOUT),
        sockets=MemorySockets(),
        presence=MemoryPresence(),
        push=MemoryPush(),
        session_timer=MemorySessionTimer(),
        max_attempts=2,  # two waits of the lock timeout each
    )
    try:
        tag = "held_"
        await store.seed_session(
            make_session(f"{tag}s0", customer_id=f"{tag}c", expires_at=SESSION_END)
        )
        await store.seed_payment(make_payment(f"{tag}p0", customer_id=f"{tag}c"))
        ext = await service.request_extension(
            session_id=f"{tag}s0",
            customer_id=f"{tag}c",
            duration_minutes=MINUTES,
            price=15000,
            extension_payment_session_id=f"{tag}p0",
        )
        clock.at = ext.expires_at + LATE

        def reject() -> Awaitable[Extension]:
            return service.respond_to_extension(
                extension_id=ext.id, session_id=ext.session_id, mitra_id="m1", accepted=False
            )

        # A stuck worker holds the extension's row in an open transaction.
        with psycopg.connect(database, autocommit=False) as stuck:
            stuck.execute("SELECT id FROM extensions WHERE id = %s FOR UPDATE", (ext.id,))
            with pytest.raises(ExtensionError) as held:
                await reject()
            before = await store.dump(session_ids=[ext.session_id])
            stuck.rollback()
        assert (held.value.code, held.value.status_code) == (ErrorCode.CONFLICT, 409)
        assert [e.status for e in before.extensions] == [ExtensionStatus.PENDING]
        assert [p.status for p in before.payments] == [PaymentStatus.CONFIRMED]
        assert before.ledger == []

        with pytest.raises(ExtensionError) as late:
            await reject()
        assert late.value.code is ErrorCode.EXTENSION_RESOLVED
        assert "window has passed" in late.value.message
        after = await store.dump(session_ids=[ext.session_id])
        assert [e.status for e in after.extensions] == [ExtensionStatus.TIMEOUT]
        assert [p.status for p in after.payments] == [PaymentStatus.FAILED]
        assert after.ledger == []
    finally:
        await service.aclose()
        await store.aclose()
