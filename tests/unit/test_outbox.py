"""``OutboxDispatcher`` over the memory outbox: order, lease, retry with backoff, dead."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import timedelta

import pytest

from extension_fsm import DeliveryError, DispatchReport, OutboxDispatcher, Participant
from extension_fsm.adapters.clock import VirtualClock
from extension_fsm.adapters.memory import (
    MemoryPush,
    MemorySessionTimer,
    MemorySockets,
    MemoryStore,
)
from extension_fsm.errors import SocketUnreachable
from extension_fsm.model import (
    ClearClosureGrace,
    Effect,
    JSONValue,
    Notify,
    PushMessage,
    SessionExpiryExtended,
    StartClosureGrace,
)
from extension_fsm.outbox import decode_effect, encode_effects
from extension_fsm.testing.samples import add_outbox


class _Rig:
    def __init__(self, **options: float) -> None:
        self.clock = VirtualClock()
        self.store = MemoryStore()
        self.sockets = MemorySockets()
        self.push = MemoryPush()
        self.timer = MemorySessionTimer()
        self.dispatcher = OutboxDispatcher(
            self.store.outbox,
            clock=self.clock,
            sockets=self.sockets,
            push=self.push,
            session_timer=self.timer,
            **options,  # type: ignore[arg-type]
        )
        self._n = 0

    def _id(self) -> str:
        self._n += 1
        return f"m{self._n:03d}"

    async def write(self, *effects: Effect) -> list[str]:
        rows = encode_effects(effects, self.clock.now(), self._id)
        await add_outbox(self.store, *rows)
        return [r.id for r in rows]

    def row(self, message_id: str) -> object:
        return self.store.outbox_rows[message_id]


def _notify(n: int, *, push: bool = False, session_id: str = "s1") -> Notify:
    return Notify(
        session_id=session_id,
        recipient=Participant.MITRA,
        user_id="m1",
        message={"type": "session_resumed", "n": n},
        dedupe_key=f"e1:k{n}:mitra",
        push=PushMessage("t", "b", {"n": n}) if push else None,
    )


def test_every_effect_survives_the_round_trip_through_a_row() -> None:
    clock = VirtualClock()
    effects: list[Effect] = [
        _notify(1, push=True),
        _notify(2),
        StartClosureGrace("s1", clock.now() + timedelta(seconds=60)),
        ClearClosureGrace("s1"),
        SessionExpiryExtended("s1", clock.now() + timedelta(minutes=30)),
    ]
    ids = iter(str(i) for i in range(10))
    rows = encode_effects(effects, clock.now(), lambda: next(ids))
    assert [decode_effect(r) for r in rows] == effects
    assert [r.id for r in rows] == ["0", "1", "2", "3", "4"]


async def test_rows_are_delivered_in_the_order_written_with_their_dedupe_key() -> None:
    rig = _Rig()
    await rig.write(*(_notify(n) for n in range(5)))
    rig.sockets.on_session[("s1", Participant.MITRA)] = True
    report = await rig.dispatcher.dispatch_due()
    assert report == DispatchReport(delivered=5)
    assert [d.payload["n"] for d in rig.sockets.sent] == [0, 1, 2, 3, 4]
    assert [d.payload["dedupe_key"] for d in rig.sockets.sent] == [
        f"e1:k{n}:mitra" for n in range(5)
    ]
    assert await rig.dispatcher.dispatch_due() == DispatchReport()  # nothing twice


async def test_dispatch_due_respects_its_limit() -> None:
    rig = _Rig()
    await rig.write(*(_notify(n) for n in range(5)))
    assert (await rig.dispatcher.dispatch_due(limit=2)).delivered == 2
    assert [d.payload["n"] for d in rig.sockets.sent] == [0, 1]
    assert (await rig.dispatcher.dispatch_due(limit=10)).delivered == 3


async def test_deliver_takes_only_the_named_rows() -> None:
    rig = _Rig()
    ids = await rig.write(*(_notify(n, session_id=f"s{n}") for n in (1, 2, 3)))
    assert (await rig.dispatcher.deliver([ids[1]])).delivered == 1
    assert [d.payload["n"] for d in rig.sockets.sent] == [2]
    assert await rig.dispatcher.deliver([]) == DispatchReport()


async def test_socket_first_push_only_when_no_socket_took_it() -> None:
    rig = _Rig()
    await rig.write(_notify(1, push=True), _notify(2))
    await rig.dispatcher.dispatch_due()
    assert [d.taken for d in rig.sockets.sent] == [False, False]
    assert [p.payload["data"] for p in rig.push.sent] == [{"n": 1}]  # row 2 has no push
    rig.sockets.on_session[("s1", Participant.MITRA)] = True
    await rig.write(_notify(3, push=True))
    await rig.dispatcher.dispatch_due()
    assert len(rig.push.sent) == 1


class _PartitionedSockets(MemorySockets):
    """While ``reachable`` is false, the recipient's socket is on an instance
    that is not listening (crashed, or cut off from Redis)."""

    reachable = False

    async def send(
        self, session_id: str, participant: Participant, message: Mapping[str, JSONValue]
    ) -> bool:
        if not self.reachable:
            raise SocketUnreachable("not listening")
        return await super().send(session_id, participant, message)


async def test_an_unreachable_socket_is_pushed_to_or_retried_never_dropped() -> None:
    rig = _Rig()
    sockets = _PartitionedSockets()
    dispatcher = OutboxDispatcher(
        rig.store.outbox,
        clock=rig.clock,
        sockets=sockets,
        push=rig.push,
        session_timer=rig.timer,
        base_backoff=1,
    )
    pushed_id, nudge_id = await rig.write(_notify(1, push=True), _notify(2))
    # With a push: pushed now.  Without one: kept for a retry, not marked delivered.
    assert await dispatcher.dispatch_due() == DispatchReport(delivered=1, retried=1)
    assert [p.payload["data"] for p in rig.push.sent] == [{"n": 1}]
    assert rig.store.outbox_rows[pushed_id].delivered_at is not None
    nudge = rig.store.outbox_rows[nudge_id]
    assert nudge.delivered_at is None and "not listening" in (nudge.last_error or "")
    # The instance listens again: the retry reaches the socket.
    sockets.reachable = True
    sockets.on_session[("s1", Participant.MITRA)] = True
    await rig.clock.advance(1)
    assert (await dispatcher.dispatch_due()).delivered == 1
    assert [d.payload["n"] for d in sockets.sent if d.taken] == [2]


async def test_session_timer_rows_reach_the_host_timer() -> None:
    rig = _Rig()
    at = rig.clock.now() + timedelta(seconds=60)
    await rig.write(
        StartClosureGrace("s1", at), ClearClosureGrace("s1"), SessionExpiryExtended("s1", at)
    )
    await rig.dispatcher.dispatch_due()
    assert rig.timer.calls == [
        ("start_closure_grace", "s1", at),
        ("clear_closure_grace", "s1", None),
        ("expiry_extended", "s1", at),
    ]


async def test_a_claimed_row_is_leased_then_taken_again_when_the_lease_runs_out() -> None:
    rig = _Rig(lease_seconds=30)
    (row_id,) = await rig.write(_notify(1))
    # A worker claims the row and dies before marking it.
    claimed = await rig.store.outbox.claim(rig.clock.now(), 10, 30)
    assert [m.id for m in claimed] == [row_id]
    assert await rig.dispatcher.dispatch_due() == DispatchReport()  # leased to the dead worker
    await rig.clock.advance(29)
    assert await rig.dispatcher.dispatch_due() == DispatchReport()
    await rig.clock.advance(1)
    assert (await rig.dispatcher.dispatch_due()).delivered == 1


async def test_retryable_failures_back_off_exponentially_up_to_the_cap() -> None:
    rig = _Rig(base_backoff=2, max_backoff=10)
    (row_id,) = await rig.write(_notify(1, push=True))
    rig.push.failures.extend(DeliveryError("busy", retryable=True) for _ in range(4))
    waits = []
    for _ in range(4):
        before = rig.clock.now()
        assert (await rig.dispatcher.dispatch_due()).retried == 1
        row = rig.store.outbox_rows[row_id]
        waits.append((row.available_at - before).total_seconds())
        assert row.last_error == "DeliveryError: busy"
        await rig.clock.advance_to(row.available_at - timedelta(microseconds=1))
        assert await rig.dispatcher.dispatch_due() == DispatchReport()  # not yet
        await rig.clock.advance_to(row.available_at)
    assert waits == [2, 4, 8, 10]
    assert (await rig.dispatcher.dispatch_due()).delivered == 1
    assert rig.store.outbox_rows[row_id].attempts == 4


async def test_a_final_failure_is_dead_at_once() -> None:
    rig = _Rig()
    (row_id,) = await rig.write(_notify(1, push=True))
    rig.push.failures.append(DeliveryError("unregistered", retryable=False))
    assert await rig.dispatcher.dispatch_due() == DispatchReport(dead=1)
    row = rig.store.outbox_rows[row_id]
    assert row.dead and row.last_error == "unregistered"
    await rig.clock.advance(10_000)
    assert await rig.dispatcher.dispatch_due() == DispatchReport()


async def test_retryable_failures_go_dead_after_max_attempts() -> None:
    rig = _Rig(base_backoff=1, max_backoff=1, max_attempts=3)
    (row_id,) = await rig.write(_notify(1, push=True))
    rig.push.failures.extend(DeliveryError("busy", retryable=True) for _ in range(5))
    reports = []
    for _ in range(3):
        reports.append(await rig.dispatcher.dispatch_due())
        await rig.clock.advance(1)
    assert reports == [DispatchReport(retried=1), DispatchReport(retried=1), DispatchReport(dead=1)]
    assert rig.store.outbox_rows[row_id].dead


async def test_an_unexpected_adapter_error_is_retried_not_lost() -> None:
    rig = _Rig(base_backoff=1)
    (row_id,) = await rig.write(_notify(1))

    async def broken(*args: object) -> bool:
        raise RuntimeError("adapter bug")

    rig.sockets.send = broken  # type: ignore[method-assign, assignment]
    assert await rig.dispatcher.dispatch_due() == DispatchReport(retried=1)
    assert not rig.store.outbox_rows[row_id].dead
    assert rig.store.outbox_rows[row_id].last_error == "RuntimeError: adapter bug"


async def test_an_adapter_error_every_time_goes_dead_after_max_attempts() -> None:
    """An adapter bug is retried like a retryable failure, within the same
    budget: the last allowed attempt ends the row dead, naming the error."""
    rig = _Rig(base_backoff=1, max_backoff=1, max_attempts=3)
    (row_id,) = await rig.write(_notify(1))

    async def broken(*args: object) -> bool:
        raise RuntimeError("adapter bug")

    rig.sockets.send = broken  # type: ignore[method-assign, assignment]
    reports = []
    for _ in range(3):
        reports.append(await rig.dispatcher.dispatch_due())
        await rig.clock.advance(1)
    assert reports == [DispatchReport(retried=1), DispatchReport(retried=1), DispatchReport(dead=1)]
    row = rig.store.outbox_rows[row_id]
    assert row.dead and row.attempts == 3
    assert row.last_error == "RuntimeError: adapter bug"
    await rig.clock.advance(10_000)
    assert await rig.dispatcher.dispatch_due() == DispatchReport()


class _BusyTimer(MemorySessionTimer):
    """A host session timer that answers every command with a retryable failure."""

    async def clear_closure_grace(self, session_id: str, *, seq: int) -> None:
        raise DeliveryError("busy", retryable=True)


async def _waits_until_dead(rig: _Rig, row_id: str) -> list[float]:
    """The waits between the attempts at ``row_id`` until it is given up on."""
    waits: list[float] = []
    while True:
        before = rig.clock.now()
        report = await rig.dispatcher.dispatch_due()
        row = rig.store.outbox_rows[row_id]
        if report == DispatchReport(dead=1):
            assert row.dead
            return waits
        assert report == DispatchReport(retried=1)
        waits.append((row.available_at - before).total_seconds())
        await rig.clock.advance_to(row.available_at)


async def test_by_default_a_notification_is_given_up_on_after_six_attempts() -> None:
    """docs/delivery.md: retries after 1, 2, 4, 8 and 16 seconds, then dead."""
    rig = _Rig()
    (row_id,) = await rig.write(_notify(1, push=True))
    rig.push.failures.extend(DeliveryError("busy", retryable=True) for _ in range(50))
    assert await _waits_until_dead(rig, row_id) == [1, 2, 4, 8, 16]
    assert rig.store.outbox_rows[row_id].attempts == 6


async def test_by_default_a_timer_command_is_given_up_on_after_twenty_attempts() -> None:
    """docs/delivery.md: 20 attempts, the backoff doubling up to 300 s (about an hour)."""
    rig = _Rig()
    rig.dispatcher = OutboxDispatcher(
        rig.store.outbox,
        clock=rig.clock,
        sockets=rig.sockets,
        push=rig.push,
        session_timer=_BusyTimer(),
    )
    (row_id,) = await rig.write(ClearClosureGrace("s1"))
    waits = await _waits_until_dead(rig, row_id)
    assert waits == [2**n for n in range(9)] + [300] * 10
    assert rig.store.outbox_rows[row_id].attempts == 20
    assert 55 * 60 < sum(waits) < 65 * 60


async def test_one_bad_row_does_not_block_the_rows_of_other_lanes() -> None:
    rig = _Rig()
    await rig.write(_notify(1, push=True), _notify(2, push=True, session_id="s2"))
    rig.push.failures.append(DeliveryError("busy", retryable=True))
    assert await rig.dispatcher.dispatch_due() == DispatchReport(delivered=1, retried=1)
    assert [p.payload["data"] for p in rig.push.sent] == [{"n": 2}]


@pytest.mark.parametrize("limit", [1, 3])
async def test_run_loops_until_cancelled(limit: int) -> None:
    rig = _Rig()
    await rig.write(*(_notify(n) for n in range(3)))
    task = asyncio.create_task(rig.dispatcher.run(interval=0.001, limit=limit))
    for _ in range(200):
        if len(rig.sockets.sent) == 3:
            break
        await asyncio.sleep(0.001)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [d.payload["n"] for d in rig.sockets.sent] == [0, 1, 2]
