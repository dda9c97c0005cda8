"""A sweep whose claimed batches cannot be read resolves the due rows one by
one, batch after batch, in one pass: every healthy row is resolved, every
unreadable row is set aside once, a row under contention is left pending for
the next sweep and never blocks the rows behind it (memory store)."""

from __future__ import annotations

import pytest

from extension_fsm import ExtensionService, ExtensionStatus, TimeoutAction
from extension_fsm.adapters.rowwise import RowSnapshots
from extension_fsm.core import Snapshot
from extension_fsm.errors import ConcurrencyConflict
from extension_fsm.simulator import World
from tests.unit._support import new_world, other_worker, requests_due_in_turn

BATCH = 2


def _worker(world: World, *, spread: bool) -> ExtensionService:
    # max_attempts=2: a locked row gives up at once (no backoff to wait out)
    return other_worker(world, max_attempts=2, sweep_batch=BATCH, sweep_spread=spread)


@pytest.mark.parametrize("spread", [False, True])
@pytest.mark.parametrize(
    ("count", "bad", "contended"),
    [
        (5, {0, 1}, set()),  # a whole first batch unreadable
        (6, {0, 1, 2, 3}, set()),  # two whole batches unreadable
        (7, {1, 4, 6}, set()),  # one in several batches, the last row too
        (6, set(), {0}),  # the first row always contended
        (5, set(), {1}),  # a batch that moved, its last row contended: the pass goes on
        (7, {2, 3}, {0}),
        (4, set(), set()),  # every row healthy, the count a multiple of the batch
    ],
)
async def test_row_by_row_sweep_takes_batch_after_batch_in_one_pass(
    monkeypatch: pytest.MonkeyPatch,
    count: int,
    bad: set[int],
    contended: set[int],
    spread: bool,
) -> None:
    world, _ = await new_world(use_timers=False)
    world.config.timeout_action = TimeoutAction.AUTO_REJECT
    ids = await requests_due_in_turn(world, count)
    bad_ids = {ids[i] for i in bad}
    contended_ids = {ids[i] for i in contended}
    read_one = RowSnapshots.for_timeout
    busy = True

    async def unreadable_batch(self: RowSnapshots, *args: object) -> list[Snapshot]:
        raise ValueError("a value the driver cannot convert")

    async def read_or_fail(self: RowSnapshots, extension_id: str) -> Snapshot:
        if extension_id in bad_ids:
            raise ValueError("junk in responded_at")
        if busy and extension_id in contended_ids:
            raise ConcurrencyConflict("row locked by another worker")
        return await read_one(self, extension_id)

    monkeypatch.setattr(RowSnapshots, "for_due", unreadable_batch)
    monkeypatch.setattr(RowSnapshots, "for_timeout", read_or_fail)
    worker = _worker(world, spread=spread)
    await world.clock.advance(world.config.timeout_seconds + 1)

    resolved = await worker.sweep_due()

    healthy = set(ids) - bad_ids - contended_ids
    assert sorted(e.id for e in resolved) == sorted(healthy)
    assert len(resolved) == len(healthy)  # none twice
    assert {e.status for e in resolved} <= {ExtensionStatus.REJECTED, ExtensionStatus.TIMEOUT}
    assert {i: world.store.set_aside[i][1] for i in bad_ids} == dict.fromkeys(bad_ids, 1)
    assert contended_ids.isdisjoint(world.store.set_aside)
    pending = {e.id for e in (await world.store.dump()).extensions if e.status.value == "pending"}
    assert pending == bad_ids | contended_ids

    # The contention is over: the next sweep takes the contended rows; the
    # rows set aside wait out their backoff and are not tried again.
    busy = False
    again = await worker.sweep_due()
    assert sorted(e.id for e in again) == sorted(contended_ids)
    assert {i: world.store.set_aside[i][1] for i in bad_ids} == dict.fromkeys(bad_ids, 1)
    await worker.aclose()


async def test_a_batch_of_contended_rows_stops_the_pass_instead_of_spinning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """When no row of a batch can move (all locked elsewhere), the pass ends:
    the next sweep retries them."""
    world, _ = await new_world(use_timers=False)
    world.config.timeout_action = TimeoutAction.AUTO_REJECT
    ids = await requests_due_in_turn(world, BATCH + 1)
    tried: list[str] = []

    async def unreadable_batch(self: RowSnapshots, *args: object) -> list[Snapshot]:
        raise ValueError("a value the driver cannot convert")

    async def always_locked(self: RowSnapshots, extension_id: str) -> Snapshot:
        tried.append(extension_id)
        raise ConcurrencyConflict("row locked by another worker")

    monkeypatch.setattr(RowSnapshots, "for_due", unreadable_batch)
    monkeypatch.setattr(RowSnapshots, "for_timeout", always_locked)
    worker = _worker(world, spread=False)
    await world.clock.advance(world.config.timeout_seconds + 1)

    assert await worker.sweep_due() == []
    assert set(tried) == set(ids[:BATCH])  # the first batch only, then the pass ended
    assert world.store.set_aside == {}
    await worker.aclose()
