"""Outbox lanes, part of the store contract: a row of a lane is claimed only
when every older row of its lane is delivered or dead, or taken by the same
claim (a run from the lane's oldest open row on); rows without a lane are
never held.  :class:`~extension_fsm.testing.StoreContract` includes it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ..ports import InspectableStore, OutboxMessage
from .samples import add_outbox

__all__ = ["OutboxLanesContract"]

T0 = datetime(2026, 1, 1, tzinfo=UTC)
LEASE = 30.0


def _row(row_id: str, lane: str | None) -> OutboxMessage:
    return OutboxMessage(
        id=row_id,
        kind="session_timer" if lane else "notify",
        dedupe_key=f"k-{row_id}",
        payload={"session_id": "s1"},
        created_at=T0,
        lane=lane,
    )


async def _claim(store: InspectableStore, at: datetime, ids: list[str] | None = None) -> list[str]:
    return [m.id for m in await store.outbox.claim(at, 10, LEASE, ids)]


def _assert_runs(claimed: list[str], must: list[str], lane: list[str]) -> None:
    """``claimed`` holds every row of ``must``, and of ``lane`` (one lane's open
    rows, oldest first) a run from its first on: a store may take a lane's
    rows behind its oldest open one in the same claim, never one without the
    rows before it."""
    assert set(must) <= set(claimed), claimed
    taken = [row for row in lane if row in claimed]
    assert taken == lane[: len(taken)], claimed
    assert set(claimed) <= set(must) | set(lane), claimed


class OutboxLanesContract:
    """The lane cases; needs a ``store`` fixture (StoreContract has one)."""

    pytestmark = pytest.mark.asyncio  # also under pytest-asyncio's strict mode

    async def test_lanes_a_row_is_claimed_only_with_every_older_open_row_of_its_lane(
        self, store: InspectableStore
    ) -> None:
        await add_outbox(store, _row("a1", "s1:timer"), _row("n1", None), _row("b1", "s2:timer"))
        await add_outbox(store, _row("a2", "s1:timer"), _row("n2", None), _row("a3", "s1:timer"))
        lane = ["a1", "a2", "a3"]
        _assert_runs(await _claim(store, T0), ["a1", "n1", "b1", "n2"], lane)
        # a1 is leased: a2 still waits, even once asked for by id
        assert await _claim(store, T0, ["a2", "a3"]) == []
        # a1 failed and backs off: a2 still waits (order is kept across retries)
        await store.outbox.mark_retry("a1", T0 + timedelta(seconds=5), "busy")
        later = T0 + timedelta(seconds=LEASE + 1)
        claimed = await store.outbox.claim(later, 10, LEASE)
        # every lease ran out: the heads come back, a2 and a3 only behind a1
        _assert_runs([m.id for m in claimed], ["a1", "n1", "b1", "n2"], lane)
        lanes = {m.id: m.lane for m in claimed}
        assert [lanes["a1"], lanes["n1"], lanes["b1"], lanes["n2"]] == [
            "s1:timer",
            None,
            "s2:timer",
            None,
        ]
        await store.outbox.mark_delivered(["a1"], later)
        later += timedelta(seconds=LEASE + 1)
        _assert_runs(await _claim(store, later, ["a2", "a3"]), ["a2"], ["a2", "a3"])
        # a dead row no longer holds its lane
        await store.outbox.mark_dead("a2", later, "gone")
        later += timedelta(seconds=LEASE + 1)
        assert await _claim(store, later, ["a3"]) == ["a3"]

    async def test_lanes_a_claim_takes_nothing_behind_a_row_it_does_not_take(
        self, store: InspectableStore
    ) -> None:
        await add_outbox(store, _row("a1", "s1:timer"), _row("a2", "s1:timer"))
        await add_outbox(store, _row("a3", "s1:timer"))
        # a2 is not asked for: a3 is not taken without it
        assert await _claim(store, T0, ["a1", "a3"]) == ["a1"]
        later = T0 + timedelta(seconds=LEASE + 1)
        # a claim cut by its limit takes the oldest
        assert [m.id for m in await store.outbox.claim(later, 1, LEASE)] == ["a1"]
        # a1 is held: nothing of its lane goes to another claim
        assert await _claim(store, later) == []

    async def test_lanes_rows_without_a_lane_are_never_held(self, store: InspectableStore) -> None:
        await add_outbox(store, _row("n1", None), _row("n2", None))
        assert await _claim(store, T0, ["n2"]) == ["n2"]
        assert await _claim(store, T0) == ["n1"]
        dump = await store.dump()
        assert [m.lane for m, _ in dump.outbox] == [None, None]
