"""A sweep's batch whose write loses a race (another worker moved one of its
rows between the batch's read and its commit): nothing of the batch is
written, then each row it held is resolved on its own, on fresh rows; the
row that moved keeps what the other worker wrote."""

from __future__ import annotations

import asyncio
import logging
from types import TracebackType
from typing import Any, Self

import pytest

from extension_fsm import ExtensionService, ExtensionStatus, TimeoutAction
from extension_fsm.adapters.memory import MemoryStore
from extension_fsm.invariants import check_invariants
from extension_fsm.model import FailureCause, PaymentStatus
from tests.unit._support import new_world, requests_due_in_turn


class _FirstCommitWaits:
    """A store whose first commit waits until ``gate`` opens (``waiting`` says
    it got there): the units of work are the wrapped store's own."""

    def __init__(self, inner: MemoryStore) -> None:
        self.inner = inner
        self.gate = asyncio.Event()
        self.waiting = asyncio.Event()
        self.commits = 0

    def unit_of_work(self) -> _Unit:
        return _Unit(self, self.inner.unit_of_work())

    @property
    def outbox(self) -> Any:
        return self.inner.outbox


class _Unit:
    def __init__(self, owner: _FirstCommitWaits, inner: Any) -> None:
        self._owner = owner
        self._inner = inner
        self.snapshots = inner.snapshots
        self.write_batch = inner.write_batch
        self.set_aside = inner.set_aside

    async def __aenter__(self) -> Self:
        await self._inner.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._inner.__aexit__(exc_type, exc, tb)

    async def commit(self) -> None:
        self._owner.commits += 1
        if self._owner.commits == 1:
            self._owner.waiting.set()
            await self._owner.gate.wait()
        await self._inner.commit()


async def test_a_batch_that_loses_its_race_resolves_each_row_on_its_own(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="extension_fsm")
    world, _ = await new_world(use_timers=False)
    world.config.timeout_action = TimeoutAction.AUTO_REJECT
    ids = await requests_due_in_turn(world, 3)  # sessions s1, s2, s3
    memory = world.store
    assert isinstance(memory, MemoryStore)
    gated = _FirstCommitWaits(memory)
    worker = ExtensionService(
        gated,  # type: ignore[arg-type]
        clock=world.clock,
        config=world.config,
        sockets=world.sockets,
        presence=world.presence,
        push=world.push,
        session_timer=world.session_timer,
        sweep_batch=5,
    )
    await world.clock.advance(world.config.timeout_seconds + 1)

    sweep = asyncio.create_task(worker.sweep_due())
    await asyncio.wait_for(gated.waiting.wait(), 5)  # the batch is decided, not yet written
    await world.service.end_session("s2")  # the host ends s2 meanwhile: its extension moves
    gated.gate.set()
    resolved = await asyncio.wait_for(sweep, 5)

    assert sorted(e.id for e in resolved) == sorted([ids[0], ids[2]])
    assert all(e.status is ExtensionStatus.TIMEOUT for e in resolved)
    assert gated.commits == 3  # the lost batch, then one commit per row still pending
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
