"""MemoryStore keeps a row's version only while a unit of work could need it:
versions are what read validation compares against an open snapshot, so they
are dropped when no snapshot predates them, and kept while one does."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from extension_fsm.adapters.memory import MemoryStore
from extension_fsm.errors import ConcurrencyConflict
from extension_fsm.model import SessionStatus
from extension_fsm.simulator import make_session

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _held(store: MemoryStore) -> int:
    return sum(map(len, store._changed.values()))


async def _touch(
    store: MemoryStore, session_id: str, minutes: int, prune_at: int | None = None
) -> None:
    if prune_at is not None:
        store._prune_at = prune_at  # 0: the commit prunes what it may
    async with store.unit_of_work() as uow:
        session = await uow.sessions.get(session_id)
        assert session is not None
        moved = replace(session, expires_at=T0 + timedelta(minutes=minutes))
        assert await uow.sessions.update(moved, session.status)
        await uow.commit()


async def test_versions_go_when_no_unit_of_work_is_open() -> None:
    store = MemoryStore()
    for n in range(50):
        store.add_session(make_session(f"s{n}", expires_at=T0))
    for n in range(50):
        await _touch(store, f"s{n}", n)
    assert _held(store) == 0  # 100 commits, nothing kept once each closed
    assert store.sessions["s49"].expires_at == T0 + timedelta(minutes=49)


@pytest.mark.parametrize("prune_at", [0, 10**9], ids=["pruning every commit", "never pruning"])
async def test_an_open_snapshot_still_sees_every_change_made_after_it(prune_at: int) -> None:
    store = MemoryStore()
    for n in range(20):
        store.add_session(make_session(f"s{n}", expires_at=T0))
    reader = store.unit_of_work()
    async with reader:
        assert await reader.sessions.get("s0") is not None  # the snapshot is taken here
        for n in range(1, 20):  # others commit meanwhile, pruning what they may
            await _touch(store, f"s{n}", n, prune_at)
        with pytest.raises(ConcurrencyConflict):
            await reader.sessions.get("s5")  # changed after the snapshot
    assert _held(store) == 0  # the last snapshot closed

    # The commit re-checks every read: a stale one fails it, whatever was pruned.
    store.add_session(make_session("quiet", expires_at=T0))
    writer = store.unit_of_work()
    async with writer:
        assert await writer.sessions.get("s0") is not None
        quiet = await writer.sessions.get("quiet")
        assert quiet is not None
        for n in range(1, 20):
            await _touch(store, f"s{n}", 100 + n, prune_at)
        await _touch(store, "s0", 99, prune_at)  # moves a row the writer read
        ended = replace(quiet, status=SessionStatus.ENDED)
        assert await writer.sessions.update(ended, quiet.status)
        with pytest.raises(ConcurrencyConflict):
            await writer.commit()
    assert store.sessions["quiet"].status is SessionStatus.ACTIVE
    assert _held(store) == 0
