"""The dispatcher's loops over the memory outbox: ``dispatch_due`` keeps taking
rows while lanes open up, ``run`` goes on without sleeping while passes come
back full and outlives a failed pass, ``aclose`` lets background deliveries
finish within its grace and cancels the rest."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta

import pytest

from extension_fsm import DeliveryError, DispatchReport, OutboxDispatcher, Participant
from extension_fsm.adapters.clock import VirtualClock
from extension_fsm.adapters.memory import MemoryPush, MemorySessionTimer, MemoryStore
from extension_fsm.model import Effect, JSONValue, Notify, SessionExpiryExtended
from extension_fsm.outbox import BACKGROUND_TASK_NAME, encode_effects
from extension_fsm.ports import OutboxMessage, OutboxStore
from extension_fsm.testing.loop import VirtualTimeLoop
from extension_fsm.testing.samples import add_outbox

BOUND = 10.0  # seconds: the most any wait below may take before the test fails


async def _until(done: Callable[[], bool], *, pause: float = 0.0, turns: int = 10_000) -> None:
    """Let the loop turn until ``done()`` (at most ``turns`` pauses)."""
    for _ in range(turns):
        if done():
            return
        await asyncio.sleep(pause)
    raise AssertionError("not done in time")


class _FlakyOutbox:
    """The memory outbox whose next ``fail_claims`` claims raise (a flaky database)."""

    def __init__(self, inner: OutboxStore, fail_claims: int) -> None:
        self._inner = inner
        self.fail_claims = fail_claims
        self.claims = 0
        self.limits: list[int] = []  # the limit of each claim

    async def claim(
        self,
        now: datetime,
        limit: int,
        lease_seconds: float,
        ids: Sequence[str] | None = None,
    ) -> list[OutboxMessage]:
        self.claims += 1
        self.limits.append(limit)
        if self.fail_claims > 0:
            self.fail_claims -= 1
            raise ConnectionError("database went away")
        return await self._inner.claim(now, limit, lease_seconds, ids)

    async def mark_delivered(self, ids: Sequence[str], at: datetime) -> None:
        await self._inner.mark_delivered(ids, at)

    async def mark_retry(self, message_id: str, available_at: datetime, error: str) -> None:
        await self._inner.mark_retry(message_id, available_at, error)

    async def release(self, message_ids: Sequence[str], at: datetime) -> None:
        await self._inner.release(message_ids, at)

    async def mark_dead(self, message_id: str, at: datetime, error: str) -> None:
        await self._inner.mark_dead(message_id, at, error)


class _GatedSockets:
    """Socket sends for session ``"slow"`` wait for ``gate``; the others take a
    few turns of the loop and are recorded."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.sent: list[JSONValue] = []
        self.cancelled = 0

    async def send(
        self, session_id: str, participant: Participant, message: Mapping[str, JSONValue]
    ) -> bool:
        try:
            if session_id == "slow":
                await self.gate.wait()
            for _ in range(3):
                await asyncio.sleep(0)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        self.sent.append(message["n"])
        return True

    async def is_connected(self, participant: Participant, user_id: str) -> bool:
        return True


class _Rig:
    def __init__(self, *, fail_claims: int = 0, timer: MemorySessionTimer | None = None) -> None:
        self.clock = VirtualClock()
        self.store = MemoryStore()
        self.sockets = _GatedSockets()
        self.timer = timer or MemorySessionTimer()
        self.outbox = _FlakyOutbox(self.store.outbox, fail_claims)
        self.dispatcher = OutboxDispatcher(
            self.outbox,
            clock=self.clock,
            sockets=self.sockets,
            push=MemoryPush(),
            session_timer=self.timer,
        )
        self._n = 0

    def _id(self) -> str:
        self._n += 1
        return f"m{self._n:03d}"

    async def write(self, *effects: Effect) -> list[str]:
        rows = encode_effects(effects, self.clock.now(), self._id)
        await add_outbox(self.store, *rows)
        return [r.id for r in rows]

    def undelivered(self) -> set[str]:
        return {i for i, row in self.store.outbox_rows.items() if row.delivered_at is None}


def _notify(n: int, session_id: str = "s1") -> Notify:
    return Notify(
        session_id=session_id,
        recipient=Participant.MITRA,
        user_id="m1",
        message={"type": "session_resumed", "n": n},
        dedupe_key=f"e1:k{n}:mitra",
    )


def _extended(rig: _Rig, sessions: int, per_session: int) -> list[Effect]:
    """``per_session`` session-timer rows (one lane) for each of ``sessions`` sessions."""
    return [
        SessionExpiryExtended(f"s{s}", rig.clock.now() + timedelta(minutes=k))
        for s in range(sessions)
        for k in range(per_session)
    ]


@pytest.mark.parametrize(("sessions", "per_session"), [(1, 1), (1, 4), (3, 3), (5, 2)])
async def test_dispatch_due_follows_each_lane_to_its_end_in_one_pass(
    sessions: int, per_session: int
) -> None:
    rig = _Rig()
    await rig.write(*_extended(rig, sessions, per_session))
    report = await rig.dispatcher.dispatch_due()
    assert report == DispatchReport(delivered=sessions * per_session)
    assert rig.undelivered() == set()
    for s in range(sessions):  # each lane in the order written
        times = [at for _, sid, at in rig.timer.calls if sid == f"s{s}"]
        assert times == [rig.clock.now() + timedelta(minutes=k) for k in range(per_session)]


class _DeadEndTimer(MemorySessionTimer):
    """The host's session timer, which refuses for good its first command for
    each session of ``refuse``."""

    def __init__(self, refuse: set[str]) -> None:
        super().__init__()
        self.refuse = set(refuse)

    async def expiry_extended(self, session_id: str, expires_at: datetime, *, seq: int) -> None:
        if session_id in self.refuse:
            self.refuse.discard(session_id)
            raise DeliveryError("no such session on the host", retryable=False)
        await super().expiry_extended(session_id, expires_at, seq=seq)


@pytest.mark.parametrize("dead_sessions", [1, 2])
async def test_dispatch_due_goes_on_along_a_lane_past_a_dead_row(dead_sessions: int) -> None:
    """A row given up on opens its lane like a delivered one, in the same pass,
    also when a round delivers as many rows as it gives up on."""
    rig = _Rig(timer=_DeadEndTimer({f"s{s}" for s in range(dead_sessions)}))
    await rig.write(*_extended(rig, 2, 3))
    report = await rig.dispatcher.dispatch_due()
    assert report == DispatchReport(delivered=6 - dead_sessions, dead=dead_sessions)
    assert rig.undelivered() == {i for i, r in rig.store.outbox_rows.items() if r.dead}
    for s in range(2):
        times = [at for _, sid, at in rig.timer.calls if sid == f"s{s}"]
        first = 1 if s < dead_sessions else 0
        expected = [rig.clock.now() + timedelta(minutes=k) for k in range(first, 3)]
        assert times == expected


@pytest.mark.parametrize(
    ("sessions", "per_session", "limit"), [(1, 6, 1), (1, 6, 2), (1, 6, 5), (3, 3, 4), (3, 3, 7)]
)
async def test_dispatch_due_takes_no_more_than_its_limit_along_the_lanes(
    sessions: int, per_session: int, limit: int
) -> None:
    rig = _Rig()
    await rig.write(*_extended(rig, sessions, per_session))
    assert (await rig.dispatcher.dispatch_due(limit=limit)).delivered == limit
    assert len(rig.timer.calls) == limit
    assert len(rig.undelivered()) == sessions * per_session - limit
    assert 0 not in rig.outbox.limits  # a full pass ends without asking for nothing


async def test_run_goes_on_without_sleeping_while_passes_come_back_full() -> None:
    rig = _Rig()
    await rig.write(*(_notify(n) for n in range(4)))
    # An hour between passes: only a pass that took fewer than ``limit`` rows may wait.
    task = asyncio.create_task(rig.dispatcher.run(interval=3600, limit=1))
    try:
        await _until(lambda: not rig.undelivered())
    finally:
        task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert rig.sockets.sent == [0, 1, 2, 3]
    assert rig.undelivered() == set()


async def test_run_sleeps_after_a_pass_that_was_not_full() -> None:
    rig = _Rig()
    await rig.write(_notify(0))
    task = asyncio.create_task(rig.dispatcher.run(interval=3600, limit=2))
    try:
        await _until(lambda: not rig.undelivered())
        for _ in range(50):  # the pass ends: its next claim comes back empty
            await asyncio.sleep(0)
        assert rig.outbox.claims == 2
        for _ in range(50):
            await asyncio.sleep(0)
        assert rig.outbox.claims == 2  # asleep, not polling
        await rig.write(_notify(1))
        for _ in range(50):
            await asyncio.sleep(0)
        assert rig.sockets.sent == [0]  # the new row waits for the next pass
    finally:
        task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.parametrize("failures", [1, 3])
async def test_a_failed_pass_does_not_stop_run(
    failures: int, caplog: pytest.LogCaptureFixture
) -> None:
    rig = _Rig(fail_claims=failures)
    await rig.write(*(_notify(n) for n in range(3)))
    task = asyncio.create_task(rig.dispatcher.run(interval=0.001, limit=100))
    try:
        await _until(lambda: task.done() or not rig.undelivered(), pause=0.001)
        assert not task.done()
    finally:
        task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert rig.sockets.sent == [0, 1, 2]
    assert rig.outbox.claims > failures
    errors = [r for r in caplog.records if r.name == "extension_fsm.outbox"]
    assert len(errors) == failures
    assert all(r.exc_info is not None for r in errors)
    assert {r.getMessage() for r in errors} == {"outbox dispatch pass failed"}


def _background() -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks() if t.get_name() == BACKGROUND_TASK_NAME]


async def test_aclose_lets_deliveries_finish_within_grace_then_cancels_the_rest() -> None:
    rig = _Rig()
    quick = await rig.write(_notify(0), _notify(1, "s2"))
    slow = await rig.write(_notify(2, "slow"))
    for row_id in [*quick, *slow]:
        rig.dispatcher.deliver_soon([row_id])
    assert rig.dispatcher.in_flight == 3
    async with asyncio.timeout(BOUND):
        await rig.dispatcher.aclose(grace=0.2)
    assert rig.sockets.sent in ([0, 1], [1, 0])  # no order between two sessions
    assert rig.sockets.cancelled == 1  # the slow one, stopped within its call
    assert rig.dispatcher.in_flight == 0
    assert _background() == []
    assert rig.undelivered() == set(slow)  # left in the outbox for dispatch_due


@pytest.mark.parametrize("grace", [0.0, -1.0])
async def test_aclose_without_grace_cancels_at_once(grace: float) -> None:
    rig = _Rig()
    ids = await rig.write(_notify(0), _notify(1, "s2"))
    rig.dispatcher.deliver_soon(ids)
    async with asyncio.timeout(BOUND):
        await rig.dispatcher.aclose(grace=grace)
    assert rig.sockets.sent == []
    assert rig.dispatcher.in_flight == 0
    assert _background() == []
    assert rig.undelivered() == set(ids)


async def test_aclose_with_nothing_in_flight_returns_at_once() -> None:
    rig = _Rig()
    async with asyncio.timeout(BOUND):
        await rig.dispatcher.aclose(grace=3600)
    rig.dispatcher.deliver_soon([])  # nothing to deliver: no task
    assert rig.dispatcher.in_flight == 0
    async with asyncio.timeout(BOUND):
        await rig.dispatcher.aclose(grace=3600)


async def test_a_pass_takes_at_most_a_hundred_rows_by_default() -> None:
    rig = _Rig()
    await rig.write(*(_notify(n, f"s{n}") for n in range(101)))
    assert (await rig.dispatcher.dispatch_due()).delivered == 100
    assert len(rig.undelivered()) == 1


async def test_run_takes_at_most_a_hundred_rows_a_pass_by_default() -> None:
    rig = _Rig()
    await rig.write(*(_notify(n, f"s{n}") for n in range(101)))
    task = asyncio.create_task(rig.dispatcher.run(interval=3600))
    try:
        await _until(lambda: not rig.undelivered())  # the pass was full: no sleep
    finally:
        task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert rig.outbox.limits[:2] == [100, 100]  # a full pass, then the next at once


def test_run_passes_once_a_second_by_default_while_idle() -> None:
    """``run()`` with no ``interval``: an idle outbox is claimed from once a
    second (of the loop's time)."""

    async def main() -> None:
        outbox = _FlakyOutbox(MemoryStore().outbox, 0)
        dispatcher = OutboxDispatcher(
            outbox,
            clock=VirtualClock(),
            sockets=_GatedSockets(),
            push=MemoryPush(),
            session_timer=MemorySessionTimer(),
        )
        task = asyncio.create_task(dispatcher.run())
        await asyncio.sleep(10.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert outbox.claims == 11  # at 0, 1, ..., 10 s

    loop = VirtualTimeLoop()
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
