"""A sweep's batch whose write loses a race (another worker moved one of its
rows between the batch's read and its commit): nothing of the batch is
written, then each row it held is resolved on its own, on fresh rows; the
row that moved keeps what the other worker wrote."""

from __future__ import annotations

import asyncio
import logging

import pytest

from extension_fsm import ExtensionStatus, TimeoutAction
from extension_fsm.adapters.memory_unit import MemoryUnitOfWork
from extension_fsm.invariants import check_invariants
from extension_fsm.model import FailureCause, PaymentStatus
from tests.unit._support import new_world, other_worker, requests_due_in_turn


async def test_a_batch_that_loses_its_race_resolves_each_row_on_its_own(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.ERROR, logger="extension_fsm")
    world, _ = await new_world(use_timers=False)
    world.config.timeout_action = TimeoutAction.AUTO_REJECT
    ids = await requests_due_in_turn(world, 3)  # sessions s1, s2, s3
    # From here on, the first commit (the sweep's batch) waits for the gate.
    gate, waiting = asyncio.Event(), asyncio.Event()
    commits = 0
    commit = MemoryUnitOfWork.commit

    async def first_commit_waits(uow: MemoryUnitOfWork) -> None:
        nonlocal commits
        commits += 1
        if commits == 1:
            waiting.set()
            await gate.wait()
        await commit(uow)

    monkeypatch.setattr(MemoryUnitOfWork, "commit", first_commit_waits)
    worker = other_worker(world, sweep_batch=5)
    await world.clock.advance(world.config.timeout_seconds + 1)

    sweep = asyncio.create_task(worker.sweep_due())
    await asyncio.wait_for(waiting.wait(), 5)  # the batch is decided, not yet written
    await world.service.end_session("s2")  # the host ends s2 meanwhile: its extension moves
    gate.set()
    resolved = await asyncio.wait_for(sweep, 5)

    assert sorted(e.id for e in resolved) == sorted([ids[0], ids[2]])
    assert all(e.status is ExtensionStatus.TIMEOUT for e in resolved)
    # the lost batch, the session's end, then one commit per row still pending
    assert commits == 4
    dump = await world.store.dump()
    rows = {e.id: e for e in dump.extensions}
    ended = rows[ids[1]]  # as the session's end wrote it, not timed out over it
    assert (ended.status, ended.failure_cause) == (
        ExtensionStatus.REJECTED,
        FailureCause.SESSION_ENDED,
    )
    assert {p.status for p in dump.payments if p.id in {"p1", "p2", "p3"}} == {PaymentStatus.FAILED}
    assert dump.ledger == []  # nothing charged
    assert check_invariants(dump, now=world.clock.now()) == []
    assert [r.getMessage() for r in caplog.records] == []
    await worker.aclose()
