"""Edges of the timeout paths over the in-memory store: a presence question
that never answers, a sweep that cannot even set a bad row aside, a late answer
to an extension already resolved, and a timer whose session row is gone: each
ends (bounded, no spinning), decides as documented, asks no one it need not,
and logs no error for what is not one."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from datetime import timedelta
from types import SimpleNamespace

import pytest

from extension_fsm import (
    ExtensionError,
    ExtensionService,
    ExtensionStatus,
    Participant,
    TimeoutAction,
    TimeoutReason,
)
from extension_fsm import service as service_module
from extension_fsm.adapters.memory_unit import _Extensions
from extension_fsm.adapters.rowwise import RowSnapshots
from extension_fsm.core import Snapshot, Undecidable
from extension_fsm.errors import ErrorCode
from extension_fsm.simulator import World
from tests.unit._support import new_world, other_worker, requests_due_in_turn

BOUND = 20  # seconds: far beyond the presence timeout below; only a hang reaches it


def _asked_presence(world: World, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every mitra whose online flag the service asks for, from now on."""
    asked: list[str] = []
    is_online = world.presence.is_online

    async def recording(mitra_id: str) -> bool:
        asked.append(mitra_id)
        return await is_online(mitra_id)

    monkeypatch.setattr(world.presence, "is_online", recording)
    return asked


@pytest.mark.parametrize("path", ["sweep", "timer"])
async def test_a_presence_that_never_answers_is_not_reachable_and_never_approves(
    monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    world, session = await new_world(use_timers=path == "timer")
    world.config.timeout_action = TimeoutAction.AUTO_APPROVE
    world.connect(session, Participant.MITRA, connected=True, online=True)
    (ext_id,) = await requests_due_in_turn(world, 1)

    async def hang(mitra_id: str) -> bool:
        await asyncio.Event().wait()  # no answer, ever
        raise AssertionError("unreachable")

    monkeypatch.setattr(world.presence, "is_online", hang)
    world.service.presence_timeout = 0.01

    if path == "sweep":
        await world.clock.advance(world.config.timeout_seconds + 1)
        (ext,) = await asyncio.wait_for(world.service.sweep_due(), BOUND)
    else:
        await asyncio.wait_for(world.clock.advance(world.config.timeout_seconds + 1), BOUND)
        (ext,) = (await world.store.dump()).extensions

    assert (ext.id, ext.status, ext.reason) == (
        ext_id,
        ExtensionStatus.TIMEOUT,
        TimeoutReason.SAFEGUARD,
    )
    assert (await world.store.dump()).ledger == []


async def test_a_sweep_that_cannot_set_bad_rows_aside_ends_the_pass_without_spinning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Row by row, every row fails and so does setting it aside (the database
    refuses): nothing moved, so the pass ends after one try of each row of the
    batch; the rows stay pending for the next sweep."""
    caplog.set_level(logging.ERROR, logger="extension_fsm")
    world, _ = await new_world(use_timers=False)
    world.config.timeout_action = TimeoutAction.AUTO_REJECT
    ids = await requests_due_in_turn(world, 4)
    tried: list[str] = []

    class Spinning(BaseException):
        """Escapes the sweep's ``except Exception``: the test stops at once."""

    async def unreadable_batch(self: RowSnapshots, *args: object) -> list[Snapshot | Undecidable]:
        raise ValueError("a value the driver cannot convert")

    async def unreadable_row(self: RowSnapshots, extension_id: str) -> Snapshot:
        if extension_id in tried:
            raise Spinning(f"{extension_id} tried twice in one pass")
        tried.append(extension_id)
        raise ValueError("junk in responded_at")

    async def refuse(self: _Extensions, *args: object) -> int:
        raise RuntimeError("the database refused the write")

    monkeypatch.setattr(RowSnapshots, "for_due", unreadable_batch)
    monkeypatch.setattr(RowSnapshots, "for_timeout", unreadable_row)
    monkeypatch.setattr(_Extensions, "set_aside", refuse)
    worker = ExtensionService(
        world.store,
        clock=world.clock,
        config=world.config,
        sockets=world.sockets,
        presence=world.presence,
        push=world.push,
        session_timer=world.session_timer,
        sweep_batch=2,
    )
    await world.clock.advance(world.config.timeout_seconds + 1)

    assert await worker.sweep_due() == []

    assert tried == ids[:2]  # the first batch, each row once, then the pass ended
    assert world.store.set_aside == {}
    dump = await world.store.dump()
    assert {e.status for e in dump.extensions} == {ExtensionStatus.PENDING}
    await worker.aclose()


@pytest.mark.parametrize("accepted", [False, True])
async def test_a_late_answer_to_an_extension_already_resolved_changes_nothing_quietly(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, accepted: bool
) -> None:
    """The timer resolved it; the mitra's answer comes after: refused as
    resolved, nothing changes, no presence is asked (there is nothing left to
    decide) and nothing is logged as an error."""
    caplog.set_level(logging.ERROR, logger="extension_fsm")
    world, session = await new_world()  # the in-process timer
    world.config.timeout_action = TimeoutAction.AUTO_APPROVE
    world.connect(session, Participant.MITRA, connected=True, online=True)
    (ext_id,) = await requests_due_in_turn(world, 1)
    await world.clock.advance(world.config.timeout_seconds + 1)  # the timer approves
    before = await world.store.dump()
    assert [e.status for e in before.extensions] == [ExtensionStatus.ACCEPTED]
    asked = _asked_presence(world, monkeypatch)

    with pytest.raises(ExtensionError) as late:
        await world.service.respond_to_extension(
            extension_id=ext_id, session_id="s1", mitra_id="m1", accepted=accepted
        )
    await world.clock.advance(1)  # a late yes hurries the (spent) deadline

    assert late.value.code.value == "EXTENSION_RESOLVED"
    assert await world.store.dump() == before
    assert asked == []
    assert [r.getMessage() for r in caplog.records] == []


async def test_a_timer_whose_session_row_is_gone_asks_no_presence_and_logs_no_error(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="extension_fsm")
    world, session = await new_world()  # the in-process timer, auto-approve
    world.connect(session, Participant.MITRA, connected=True, online=True)
    (ext_id,) = await requests_due_in_turn(world, 1)
    del world.store.sessions["s1"]  # the host deleted the row
    asked = _asked_presence(world, monkeypatch)

    await world.clock.advance(world.config.timeout_seconds + 1)

    (ext,) = (await world.store.dump()).extensions
    assert (ext.id, ext.status) == (ext_id, ExtensionStatus.TIMEOUT)
    assert asked == []  # no mitra to ask about
    assert [r.getMessage() for r in caplog.records] == []


@pytest.mark.parametrize("path", ["sweep", "full batch", "timer"])
async def test_the_stores_clock_judges_the_deadline(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, path: str
) -> None:
    """A store that reads its own clock (a database's ``now()``) puts it in the
    snapshot; when it says the deadline has not passed yet, the extension is
    not timed out, whatever the application's clock says, and nothing fails."""
    caplog.set_level(logging.ERROR, logger="extension_fsm")
    world, _ = await new_world(use_timers=path == "timer")
    world.config.timeout_action = TimeoutAction.AUTO_REJECT
    (ext_id,) = await requests_due_in_turn(world, 1)
    read_one = RowSnapshots.for_timeout

    async def early_store_clock(self: RowSnapshots, extension_id: str) -> Snapshot:
        snapshot = await read_one(self, extension_id)
        ext = snapshot.extension
        if ext is None:
            return snapshot
        return replace(snapshot, now=ext.expires_at - timedelta(seconds=1))

    monkeypatch.setattr(RowSnapshots, "for_timeout", early_store_clock)
    await world.clock.advance(world.config.timeout_seconds + 1)

    if path == "sweep":
        assert await world.service.sweep_due() == []
    elif path == "full batch":  # a full batch that moved nothing ends the pass
        worker = other_worker(world, sweep_batch=1)
        assert await asyncio.wait_for(worker.sweep_due(), BOUND) == []
        await worker.aclose()
    (ext,) = (await world.store.dump()).extensions
    assert (ext.id, ext.status) == (ext_id, ExtensionStatus.PENDING)
    assert [r.getMessage() for r in caplog.records] == []


async def test_rows_the_core_refuses_are_set_aside_rows_in_conflict_left_pending(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Row by row (the batch cannot be read): a row whose timeout is refused
    (an ``ExtensionError`` other than a conflict) is set aside with its error,
    once; a row in conflict is contention, left pending and not set aside; a
    whole batch of refused rows does not end the pass: the rows behind them are
    resolved in it."""
    world, _ = await new_world(use_timers=False)
    world.config.timeout_action = TimeoutAction.AUTO_REJECT
    ids = await requests_due_in_turn(world, 5)
    refused, conflict, healthy = set(ids[:2]), ids[2], set(ids[3:])
    read_one = RowSnapshots.for_timeout

    async def unreadable_batch(self: RowSnapshots, *args: object) -> list[Snapshot | Undecidable]:
        raise ValueError("a value the driver cannot convert")

    async def read(self: RowSnapshots, extension_id: str) -> Snapshot:
        if extension_id in refused:
            raise ExtensionError(ErrorCode.INVALID_STATE, f"cannot time out {extension_id}")
        if extension_id == conflict:
            raise ExtensionError(ErrorCode.CONFLICT, "Too much contention; try again")
        return await read_one(self, extension_id)

    monkeypatch.setattr(RowSnapshots, "for_due", unreadable_batch)
    monkeypatch.setattr(RowSnapshots, "for_timeout", read)
    worker = other_worker(world, max_attempts=2, sweep_batch=2)
    await world.clock.advance(world.config.timeout_seconds + 1)
    before = world.clock.now()

    resolved = await worker.sweep_due()

    assert sorted(e.id for e in resolved) == sorted(healthy)
    assert set(world.store.set_aside) == refused
    for ext_id in refused:
        until, times, error = world.store.set_aside[ext_id]
        assert (times, error) == (1, f"ExtensionError: cannot time out {ext_id}")
        assert until > before
    pending = {e.id for e in (await world.store.dump()).extensions if e.status.value == "pending"}
    assert pending == refused | {conflict}
    await worker.aclose()


@pytest.mark.parametrize(
    "error", [ValueError("junk"), ExtensionError(ErrorCode.INVALID_STATE, "no")]
)
async def test_a_row_that_cannot_be_set_aside_does_not_end_a_pass_that_moved_others(
    monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    """Row by row: a healthy row resolved, then a bad row whose setting aside
    the database refuses: the batch still moved, so the pass goes on and the
    rows behind are resolved in it (the bad row stays pending)."""
    world, _ = await new_world(use_timers=False)
    world.config.timeout_action = TimeoutAction.AUTO_REJECT
    ids = await requests_due_in_turn(world, 4)
    bad = ids[1]
    read_one = RowSnapshots.for_timeout
    set_aside = _Extensions.set_aside

    async def unreadable_batch(self: RowSnapshots, *args: object) -> list[Snapshot | Undecidable]:
        raise ValueError("a value the driver cannot convert")

    async def read(self: RowSnapshots, extension_id: str) -> Snapshot:
        if extension_id == bad:
            raise error
        return await read_one(self, extension_id)

    async def refuse_bad(self: _Extensions, extension_id: str, *args: object) -> int:
        if extension_id == bad:
            raise RuntimeError("the database refused the write")
        return await set_aside(self, extension_id, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(RowSnapshots, "for_due", unreadable_batch)
    monkeypatch.setattr(RowSnapshots, "for_timeout", read)
    monkeypatch.setattr(_Extensions, "set_aside", refuse_bad)
    worker = other_worker(world, max_attempts=2, sweep_batch=2)
    await world.clock.advance(world.config.timeout_seconds + 1)

    resolved = await worker.sweep_due()

    assert sorted(e.id for e in resolved) == sorted(set(ids) - {bad})
    assert world.store.set_aside == {}
    pending = [e.id for e in (await world.store.dump()).extensions if e.status.value == "pending"]
    assert pending == [bad]
    await worker.aclose()


@pytest.mark.parametrize("path", ["sweep", "timer"])
async def test_a_timeout_closes_the_session_with_the_configured_grace(path: str) -> None:
    world, _ = await new_world(use_timers=path == "timer")
    world.config.timeout_action = TimeoutAction.AUTO_REJECT
    world.config.grace_seconds = 97  # not the default
    (ext_id,) = await requests_due_in_turn(world, 1)
    await world.clock.advance(world.config.timeout_seconds + 1)
    if path == "sweep":
        await world.service.sweep_due()

    dump = await world.store.dump()
    (ext,) = dump.extensions
    (session,) = dump.sessions
    assert (ext.id, ext.status) == (ext_id, ExtensionStatus.TIMEOUT)
    assert session.closure_deadline is not None
    closed_at = session.closure_deadline - timedelta(seconds=97)
    # closed when the deadline passed: at most the two seconds the clock moved since
    assert world.clock.now() - timedelta(seconds=2) <= closed_at <= world.clock.now()


async def test_a_timer_whose_mitra_changed_after_presence_was_asked_leaves_it_to_the_sweep(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The timer (a batch of one) asks the presence of the session's mitra,
    then claims the row; the host handed the session to another mitra in
    between: the new mitra was not asked about, so the row is left pending, as
    the sweep leaves a row it did not ask about, and nothing fails.  The next
    sweep asks the new mitra first: not reachable, so the extension times out
    uncharged (the old mitra's answer is never used for it)."""
    caplog.set_level(logging.ERROR, logger="extension_fsm")
    world, session = await new_world()  # the in-process timer, auto-approve
    world.connect(session, Participant.MITRA, connected=True, online=True)  # m1 only
    (ext_id,) = await requests_due_in_turn(world, 1)
    read_one = RowSnapshots.for_timeout
    reads: list[str] = []

    async def reassign_then_read(self: RowSnapshots, extension_id: str) -> Snapshot:
        reads.append(extension_id)
        if len(reads) == 2:  # the first read found whom to ask; the second claims
            sessions = world.store.sessions
            sessions["s1"] = replace(sessions["s1"], mitra_id="m2")
        return await read_one(self, extension_id)

    monkeypatch.setattr(RowSnapshots, "for_timeout", reassign_then_read)
    asked = _asked_presence(world, monkeypatch)
    await world.clock.advance(world.config.timeout_seconds + 1)

    dump = await world.store.dump()
    (ext,) = dump.extensions
    assert (ext.id, ext.status) == (ext_id, ExtensionStatus.PENDING)
    assert asked == ["m1"]
    assert dump.ledger == []

    (swept,) = await world.service.sweep_due()

    assert (swept.id, swept.status, swept.reason) == (
        ext_id,
        ExtensionStatus.TIMEOUT,
        TimeoutReason.SAFEGUARD,
    )
    assert asked == ["m1", "m2"]
    assert (await world.store.dump()).ledger == []
    assert [r.getMessage() for r in caplog.records] == []


class _StartAt:
    """A worker's random start that always picks row ``start`` of a list."""

    def __init__(self, start: int) -> None:
        self.start = start

    def randrange(self, n: int) -> int:
        return self.start % n


@pytest.mark.parametrize("spread", [False, True])
async def test_a_spread_row_by_row_pass_starts_at_the_workers_own_row_and_wraps(
    monkeypatch: pytest.MonkeyPatch, spread: bool
) -> None:
    """``sweep_spread``: each worker starts its row-by-row pass at a random row
    of the due list and wraps around; without it, at the oldest row."""
    world, _ = await new_world(use_timers=False)
    world.config.timeout_action = TimeoutAction.AUTO_REJECT
    ids = await requests_due_in_turn(world, 3)
    read_one = RowSnapshots.for_timeout
    tried: list[str] = []

    async def unreadable_batch(self: RowSnapshots, *args: object) -> list[Snapshot | Undecidable]:
        raise ValueError("a value the driver cannot convert")

    async def read(self: RowSnapshots, extension_id: str) -> Snapshot:
        tried.append(extension_id)
        return await read_one(self, extension_id)

    monkeypatch.setattr(RowSnapshots, "for_due", unreadable_batch)
    monkeypatch.setattr(RowSnapshots, "for_timeout", read)
    monkeypatch.setattr(service_module, "random", SimpleNamespace(Random=lambda: _StartAt(1)))
    worker = ExtensionService(
        world.store,
        clock=world.clock,
        config=world.config,
        sockets=world.sockets,
        presence=world.presence,
        push=world.push,
        session_timer=world.session_timer,
        sweep_batch=5,
        sweep_spread=spread,
    )
    await world.clock.advance(world.config.timeout_seconds + 1)

    resolved = await worker.sweep_due()

    assert sorted(e.id for e in resolved) == sorted(ids)
    assert tried == ([*ids[1:], ids[0]] if spread else ids)
    await worker.aclose()
