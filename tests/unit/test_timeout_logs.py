"""The log lines of the one timeout path, word for word: what an operator
greps for when a deadline went wrong (an unreadable batch, a row set aside
again, a set-aside the database refused, a presence without an answer, a
timer that could not time its extension out)."""

from __future__ import annotations

import logging

import pytest

from extension_fsm import ErrorCode, ExtensionError, Participant, TimeoutAction
from extension_fsm.adapters.memory_unit import _Extensions
from extension_fsm.adapters.rowwise import RowSnapshots
from extension_fsm.core import Snapshot, Undecidable
from tests.unit._support import new_world, requests_due_in_turn


def _lines(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == level]


async def _unreadable(self: RowSnapshots, *args: object) -> list[Snapshot | Undecidable]:
    raise ValueError("junk")


async def test_an_unreadable_batch_and_a_row_set_aside_again_are_logged_as_such(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="extension_fsm")
    world, _ = await new_world(use_timers=False)
    world.config.timeout_action = TimeoutAction.AUTO_REJECT
    (ext_id,) = await requests_due_in_turn(world, 1)
    monkeypatch.setattr(RowSnapshots, "for_due", _unreadable)
    monkeypatch.setattr(RowSnapshots, "for_timeout", _unreadable)
    await world.clock.advance(world.config.timeout_seconds + 1)

    assert await world.service.sweep_due() == []
    await world.clock.advance(31 * 60)  # past the first backoff (30 s) and then some
    assert await world.service.sweep_due() == []

    errors = _lines(caplog, logging.ERROR)
    assert errors == [
        "sweep batch unreadable; resolving due rows one by one",
        f"sweep set extension {ext_id} aside (retried with backoff): ValueError: junk",
        "sweep batch unreadable; resolving due rows one by one",
    ]
    unreadable = [r for r in caplog.records if r.getMessage().startswith("sweep batch")]
    assert all(r.exc_info is not None for r in unreadable)  # with the traceback
    again = f"sweep set extension {ext_id} aside again (2): ValueError: junk"
    assert again in _lines(caplog, logging.DEBUG)


async def test_a_set_aside_the_database_refuses_is_logged_with_its_row(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="extension_fsm")
    world, _ = await new_world(use_timers=False)
    (ext_id,) = await requests_due_in_turn(world, 1)

    async def refuse(self: _Extensions, *args: object) -> int:
        raise RuntimeError("the database refused the write")

    monkeypatch.setattr(RowSnapshots, "for_due", _unreadable)
    monkeypatch.setattr(RowSnapshots, "for_timeout", _unreadable)
    monkeypatch.setattr(_Extensions, "set_aside", refuse)
    await world.clock.advance(world.config.timeout_seconds + 1)

    assert await world.service.sweep_due() == []

    assert f"sweep could not set extension {ext_id} aside" in _lines(caplog, logging.ERROR)


async def test_a_presence_without_an_answer_is_a_warning_naming_the_mitra_and_the_error(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="extension_fsm")
    world, session = await new_world(use_timers=False)
    world.connect(session, Participant.MITRA, connected=True, online=True)
    await requests_due_in_turn(world, 1)

    async def down(mitra_id: str) -> bool:
        raise RuntimeError("presence store down")

    monkeypatch.setattr(world.presence, "is_online", down)
    await world.clock.advance(world.config.timeout_seconds + 1)

    (resolved,) = await world.service.sweep_due()

    assert resolved.status.value == "timeout"  # not reachable: never approved
    assert _lines(caplog, logging.WARNING) == [
        "presence of mitra m1 unknown (presence store down): not reachable"
    ]


async def test_a_timer_that_cannot_time_out_logs_its_extension_and_a_late_no_still_ends_it(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="extension_fsm")
    world, _ = await new_world()  # the in-process timer
    world.config.timeout_action = TimeoutAction.AUTO_REJECT
    (ext_id,) = await requests_due_in_turn(world, 1)
    monkeypatch.setattr(RowSnapshots, "for_timeout", _unreadable)

    await world.clock.advance(world.config.timeout_seconds + 1)  # the timer fails
    # Too late: refused, but the late "no" times the extension out itself, in
    # its own unit of work (it does not go through the timer's failing read).
    with pytest.raises(ExtensionError) as refused:
        await world.service.respond_to_extension(
            extension_id=ext_id, session_id="s1", mitra_id="m1", accepted=False
        )
    assert refused.value.code is ErrorCode.EXTENSION_RESOLVED
    assert refused.value.message == "The answer window has passed"

    assert _lines(caplog, logging.ERROR) == [f"timeout of extension {ext_id} failed"]
    ext = (await world.store.dump()).extensions[0]
    assert ext.status.value == "timeout"
    assert all(r.exc_info is not None for r in caplog.records)
