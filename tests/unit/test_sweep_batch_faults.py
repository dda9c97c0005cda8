"""The sweep's claimed-batch path over the in-memory store, when a claimed
batch holds rows it cannot decide, loses races, or meets a mitra reassigned
since presence was asked: the bad rows are set aside in the batch's own unit
of work, once, and the rest of the batch is resolved in the same pass; a lost
race is retried and never falls back to row by row; a row whose mitra was not
asked about is left for the next batch rather than timed out on the old
mitra's presence."""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest

from extension_fsm import (
    ExtensionStatus,
    Participant,
    PaymentStatus,
    TimeoutAction,
)
from extension_fsm.adapters.rowwise import RowSnapshots
from extension_fsm.core import Snapshot, Undecidable
from extension_fsm.errors import ConcurrencyConflict
from extension_fsm.simulator import make_session
from tests.unit._support import new_world, other_worker, requests_due_in_turn


def _no_row_by_row(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every row read one by one outside a claimed batch (the fallback)."""
    read_one = RowSnapshots.for_timeout
    in_batch = False
    alone: list[str] = []
    for_due = RowSnapshots.for_due

    async def batch(self: RowSnapshots, *args: object) -> list[Snapshot | Undecidable]:
        nonlocal in_batch
        in_batch = True
        try:
            return await for_due(self, *args)  # type: ignore[arg-type]
        finally:
            in_batch = False

    async def one(self: RowSnapshots, extension_id: str) -> Snapshot:
        if not in_batch:
            alone.append(extension_id)
        return await read_one(self, extension_id)

    monkeypatch.setattr(RowSnapshots, "for_due", batch)
    monkeypatch.setattr(RowSnapshots, "for_timeout", one)
    return alone


@pytest.mark.parametrize("kind", ["undecidable", "undecided"])
@pytest.mark.parametrize(
    ("batch", "count", "bad"),
    [
        (3, 2, {0}),  # one batch: the bad row first, a healthy one behind it
        (3, 5, {0, 3}),  # the first row of each batch
        (2, 5, {1, 4}),  # the last row of a batch and of the pass
        (2, 4, {0, 1}),  # a whole batch of bad rows, then a healthy one
    ],
)
async def test_rows_a_claimed_batch_cannot_decide_are_set_aside_once_the_rest_resolved(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    kind: str,
    batch: int,
    count: int,
    bad: set[int],
) -> None:
    """``undecidable``: the store could not read the row into a snapshot;
    ``undecided``: the core could not decide it (a naive deadline the host
    wrote).  Either way the row is set aside in the batch's unit of work with
    its error, logged once, and every other due row is resolved in one pass,
    without falling back to row by row."""
    caplog.set_level(logging.DEBUG, logger="extension_fsm")
    world, _ = await new_world(use_timers=False)
    world.config.timeout_action = TimeoutAction.AUTO_REJECT
    ids = await requests_due_in_turn(world, count)
    bad_ids = {ids[i] for i in bad}
    alone = _no_row_by_row(monkeypatch)
    for_due = RowSnapshots.for_due

    async def with_bad_rows(self: RowSnapshots, *args: object) -> list[Snapshot | Undecidable]:
        rows: list[Snapshot | Undecidable] = []
        for item in await for_due(self, *args):  # type: ignore[arg-type]
            ext = item.extension if isinstance(item, Snapshot) else None
            if ext is None or ext.id not in bad_ids:
                rows.append(item)
            elif kind == "undecidable":
                rows.append(Undecidable(ext.id, f"junk in row {ext.id}"))
            else:
                naive = replace(ext, expires_at=ext.expires_at.replace(tzinfo=None))
                rows.append(replace(item, extension=naive))
        return rows

    monkeypatch.setattr(RowSnapshots, "for_due", with_bad_rows)
    worker = other_worker(world, sweep_batch=batch)
    await world.clock.advance(world.config.timeout_seconds + 1)
    before = world.clock.now()

    resolved = await worker.sweep_due()

    healthy = set(ids) - bad_ids
    assert sorted(e.id for e in resolved) == sorted(healthy)
    assert len(resolved) == len(healthy)
    assert alone == []  # no fall back to row by row
    for ext_id in bad_ids:
        until, times, error = world.store.set_aside[ext_id]
        assert times == 1 and until > before
        if kind == "undecidable":
            assert error == f"junk in row {ext_id}"
        else:
            assert error.startswith("TypeError: ")
    assert set(world.store.set_aside) == bad_ids
    dump = await world.store.dump()
    assert {e.id for e in dump.extensions if e.status is ExtensionStatus.PENDING} == bad_ids
    assert {p.id for p in dump.payments if p.status is PaymentStatus.CONFIRMED} == {
        f"p{i + 1}" for i in bad
    }
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert sorted(r.getMessage() for r in errors) == sorted(
        f"sweep set extension {i} aside (retried with backoff): {world.store.set_aside[i][2]}"
        for i in bad_ids
    )
    # set aside: the next pass leaves them alone until their backoff is over
    assert await worker.sweep_due() == []
    assert {i: world.store.set_aside[i][1] for i in bad_ids} == dict.fromkeys(bad_ids, 1)
    await worker.aclose()


@pytest.mark.parametrize(("losses", "max_attempts"), [(1, 3), (2, 3), (3, 3), (5, 2)])
async def test_a_claimed_batch_that_loses_races_is_retried_then_left_to_the_next_sweep(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    losses: int,
    max_attempts: int,
) -> None:
    """A claim that loses a race is retried with the same batch; a sweep whose
    every attempt loses resolves nothing and leaves the rows to the next sweep,
    never reading them one by one and never logging an error."""
    caplog.set_level(logging.ERROR, logger="extension_fsm")
    world, _ = await new_world(use_timers=False)
    world.config.timeout_action = TimeoutAction.AUTO_REJECT
    ids = await requests_due_in_turn(world, 3)
    alone = _no_row_by_row(monkeypatch)
    for_due = RowSnapshots.for_due
    lost = 0
    busy = True

    async def losing(self: RowSnapshots, *args: object) -> list[Snapshot | Undecidable]:
        nonlocal lost
        if busy and lost < losses:
            lost += 1
            raise ConcurrencyConflict("could not serialize access")
        return await for_due(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(RowSnapshots, "for_due", losing)
    worker = other_worker(world, sweep_batch=5, max_attempts=max_attempts)
    await world.clock.advance(world.config.timeout_seconds + 1)

    resolved = await worker.sweep_due()

    if losses < max_attempts:
        assert sorted(e.id for e in resolved) == sorted(ids)
        assert lost == losses
    else:
        assert resolved == []
        assert lost == max_attempts  # every attempt claimed again, then gave up
        dump = await world.store.dump()
        assert {e.status for e in dump.extensions} == {ExtensionStatus.PENDING}
        busy = False  # the contention is over
        assert sorted(e.id for e in await worker.sweep_due()) == sorted(ids)
    assert alone == []
    assert world.store.set_aside == {}
    assert [r.getMessage() for r in caplog.records] == []
    await worker.aclose()


@pytest.mark.parametrize(
    ("moved", "batch"),
    [
        ({1}, 5),
        ({0, 2}, 5),
        ({0, 1, 2}, 5),
        ({0, 1, 2}, 3),  # a full batch of which nothing could be decided: the pass ends
    ],
)
async def test_a_row_whose_mitra_changed_since_presence_was_asked_waits_for_the_next_batch(
    monkeypatch: pytest.MonkeyPatch,
    moved: set[int],
    batch: int,
) -> None:
    """Auto-approve: presence is asked for the mitras of the due rows before
    the claim.  A session the host hands to another mitra in between is not
    decided on the old mitra's presence (an uncharged timeout) nor on none: it
    stays pending, and the next sweep asks the new mitra and approves it; the
    other rows of the batch are approved in the first pass."""
    world, session = await new_world(use_timers=False)
    world.config.timeout_action = TimeoutAction.AUTO_APPROVE
    ids = await requests_due_in_turn(world, 3)
    world.connect(session, Participant.MITRA, connected=True, online=True)  # m1
    new_mitra = make_session("s0", mitra_id="m2", expires_at=world.clock.now())
    world.connect(new_mitra, Participant.MITRA, connected=True, online=True)
    mitras_due = RowSnapshots.mitras_due
    handed_over = False

    async def then_reassign(self: RowSnapshots, *args: object) -> set[str]:
        nonlocal handed_over
        mitras: set[str] = await mitras_due(self, *args)  # type: ignore[arg-type]
        if not handed_over:  # the host reassigns while the presence is asked
            handed_over = True
            for i in moved:
                sid = f"s{i + 1}"
                world.store.sessions[sid] = replace(world.store.sessions[sid], mitra_id="m2")
        return mitras

    monkeypatch.setattr(RowSnapshots, "mitras_due", then_reassign)
    worker = other_worker(world, sweep_batch=batch)
    await world.clock.advance(world.config.timeout_seconds + 1)
    moved_ids = {ids[i] for i in moved}

    first = await worker.sweep_due()

    assert sorted(e.id for e in first) == sorted(set(ids) - moved_ids)
    assert {e.status for e in first} <= {ExtensionStatus.ACCEPTED}
    dump = await world.store.dump()
    assert {e.id for e in dump.extensions if e.status is ExtensionStatus.PENDING} == moved_ids
    second = await worker.sweep_due()
    assert sorted(e.id for e in second) == sorted(moved_ids)
    assert {e.status for e in second} <= {ExtensionStatus.ACCEPTED}
    assert len((await world.store.dump()).ledger) == len(ids)  # every one charged once
    await worker.aclose()
