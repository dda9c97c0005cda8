"""``end_session`` racing an answer and a sweep on PostgreSQL: three worker
threads, each with its own event loop, engine and ``ExtensionService``,
released together by a barrier.  The host ends the session while the mitra
answers just before the deadline and a sweeper times the request out just
after it (their clocks disagree, as real ones may).

Every trial must end with exactly one of the three deciding the extension,
the session ended, the money matching the outcome (charged once if and only
if accepted) and the customer told once.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable, Iterator
from datetime import timedelta

import pytest

from extension_fsm.adapters.sqlalchemy import SqlAlchemyStore
from extension_fsm.errors import ErrorCode, ExtensionError
from extension_fsm.invariants import check_invariants
from extension_fsm.model import (
    Extension,
    ExtensionStatus,
    FailureCause,
    MessageType,
    Participant,
    PaymentStatus,
    Session,
    SessionStatus,
    TimeoutAction,
)
from extension_fsm.ports import StoreDump
from tests.ci import IN_CI
from tests.integration.pg_workers import T0, Worker, race_all, seed
from tests.integration.sql_support import private_postgres_database

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

TRIALS = 500 if IN_CI else 60


@pytest.fixture(scope="module")
def workers() -> Iterator[tuple[Worker, Worker, Worker]]:
    with private_postgres_database("endrace") as url:

        async def create() -> None:
            store = await SqlAlchemyStore.open(url, create_schema=True)
            await store.aclose()

        asyncio.run(create())
        host, mitra, sweeper = Worker(url), Worker(url), Worker(url)
        try:
            yield host, mitra, sweeper
        finally:
            for w in (host, mitra, sweeper):
                w.close()


def responses_for(dump: StoreDump, extension_id: str) -> int:
    kind = MessageType.EXTENSION_RESPONSE.value
    return sum(
        1 for m, _ in dump.outbox if m.dedupe_key.startswith(extension_id) and kind in m.dedupe_key
    )


def end(w: Worker, session_id: str) -> Callable[[], Awaitable[Session]]:
    return lambda: w.service.end_session(session_id)


def answer(w: Worker, ext: Extension, accepted: bool) -> Callable[[], Awaitable[Extension]]:
    return lambda: w.service.respond_to_extension(
        extension_id=ext.id, session_id=ext.session_id, mitra_id="m1", accepted=accepted
    )


def test_end_session_race_with_an_answer_and_a_sweep(
    workers: tuple[Worker, Worker, Worker],
) -> None:
    host, mitra, sweeper = workers
    # The sweeper's mitra is reachable: an auto-approving timeout would charge.
    sweeper.sockets.connected[(Participant.MITRA, "m1")] = True
    sweeper.presence.online["m1"] = True
    cases = itertools.product(
        [True, False], [TimeoutAction.AUTO_APPROVE, TimeoutAction.AUTO_REJECT]
    )
    winners: dict[str, int] = {"end": 0, "answer": 0, "sweep": 0}
    trials: dict[str, tuple[bool, TimeoutAction]] = {}
    for trial, (accepted, action) in zip(range(TRIALS), itertools.cycle(cases), strict=False):
        tag = f"e{trial}_"
        sweeper.config.timeout_action = action
        host.clock.at = mitra.clock.at = sweeper.clock.at = T0
        host.run(seed(host, tag))
        ext = host.run(
            host.service.request_extension(
                session_id=f"{tag}s0",
                customer_id=f"{tag}c",
                duration_minutes=5,
                price=15000,
                extension_payment_session_id=f"{tag}p0",
            )
        )
        trials[ext.id] = (accepted, action)
        host.clock.at = mitra.clock.at = ext.expires_at - timedelta(seconds=1)
        sweeper.clock.at = ext.expires_at
        ended, answered, swept = race_all(
            [
                (host, end(host, ext.session_id)),
                (mitra, answer(mitra, ext, accepted)),
                (sweeper, sweeper.service.sweep_due),
            ]
        )
        # The host's end always succeeds; a late answer is refused, never half-applied.
        assert isinstance(ended, Session) and ended.status is SessionStatus.ENDED, ended
        if isinstance(answered, ExtensionError):
            assert answered.code in (ErrorCode.EXTENSION_RESOLVED, ErrorCode.SESSION_NOT_ACTIVE)
        else:
            assert isinstance(answered, Extension)
        assert isinstance(swept, list) and [e.id for e in swept] in ([], [ext.id])

        dump = host.run(host.store.dump())
        row = next(e for e in dump.extensions if e.id == ext.id)
        cancelled = row.failure_cause is FailureCause.SESSION_ENDED
        won = {"end": cancelled, "answer": isinstance(answered, Extension), "sweep": bool(swept)}
        assert sum(won.values()) == 1, (trial, won, row)
        winners[next(k for k, v in won.items() if v)] += 1
        if won["answer"]:
            assert isinstance(answered, Extension) and answered.status is row.status
            assert row.status is (
                ExtensionStatus.ACCEPTED if accepted else ExtensionStatus.REJECTED
            )
        if won["sweep"]:
            assert row.via_timeout
        if cancelled:
            assert row.status is ExtensionStatus.REJECTED and not row.via_timeout

        payment = next(p for p in dump.payments if p.id == f"{tag}p0")
        charges = [entry for entry in dump.ledger if entry.extension_id == ext.id]
        if row.status is ExtensionStatus.ACCEPTED:
            assert payment.status is PaymentStatus.CONSUMED and len(charges) == 1
        else:
            assert payment.status is PaymentStatus.FAILED and charges == []
        session = next(s for s in dump.sessions if s.id == f"{tag}s0")
        assert session.status is SessionStatus.ENDED
        assert responses_for(dump, ext.id) == 1  # the customer hears the outcome once

    dump = host.run(host.store.dump())
    assert check_invariants(dump, now=T0) == []
    assert [e.id for e in dump.extensions if e.status is ExtensionStatus.PENDING] == []
    assert sum(winners.values()) == len(trials)
    print(f"end_session race winners over {len(trials)} trials: {winners}")  # shown with -s
