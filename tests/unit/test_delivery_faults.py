"""Delivery never holds up a decision or the clock: requests return once
committed, the sweep runs while a push hangs, a pass that raises stops neither
loop, and a hung call is never attempted twice at once (lease > worst case).

Every wait is bounded (a hang fails the test, it does not stall it); nothing
asserts a duration: only orders, counts and states.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from extension_fsm import ExtensionService, OutboxDispatcher, Participant, run_sweeper
from extension_fsm.adapters.clock import EPOCH, VirtualClock
from extension_fsm.adapters.config import StaticConfig
from extension_fsm.adapters.memory import (
    MemoryPresence,
    MemorySessionTimer,
    MemorySockets,
    MemoryStore,
)
from extension_fsm.model import ExtensionStatus, Notify, PushMessage, SessionStatus
from extension_fsm.outbox import encode_effects
from extension_fsm.simulator import make_payment, make_session
from extension_fsm.testing.loop import VirtualTimeLoop
from extension_fsm.testing.samples import add_outbox
from tests.fakes.hanging import HangingPush
from tests.fakes.waiting import eventually

BOUND = 10.0  # seconds: a generous bound against a hang, never a speed check


class _Rig:
    """A service over the memory store with a push that hangs, on a virtual clock
    the test moves (no in-process deadline timers: the sweep meets deadlines)."""

    def __init__(self, *, mitra_on_socket: bool, **dispatcher: Any) -> None:
        self.clock = VirtualClock()
        self.store = MemoryStore()
        self.sockets = MemorySockets()
        self.push = HangingPush()
        self.timer = MemorySessionTimer()
        self.sockets.on_session[("s1", Participant.MITRA)] = mitra_on_socket
        self.sockets.on_session[("s1", Participant.CUSTOMER)] = True
        outbox = OutboxDispatcher(
            self.store.outbox,
            clock=self.clock,
            sockets=self.sockets,
            push=self.push,
            session_timer=self.timer,
            **dispatcher,
        )
        self.service = ExtensionService(
            self.store,
            clock=self.clock,
            config=StaticConfig(timeout_seconds=10, timeout_action="auto_reject"),
            sockets=self.sockets,
            presence=MemoryPresence(),
            push=self.push,
            session_timer=self.timer,
            dispatcher=outbox,
        )

    async def seed(self) -> None:
        await self.store.seed_session(
            make_session(expires_at=self.clock.now() + timedelta(minutes=30))
        )
        await self.store.seed_payment(make_payment())

    async def request(self) -> str:
        ext = await self.service.request_extension(
            session_id="s1",
            customer_id="c1",
            duration_minutes=30,
            price=15000,
            extension_payment_session_id="p1",
        )
        return ext.id

    async def write_push_row(self, session_id: str = "s9") -> str:
        """A committed notification for someone off every socket: it goes by push."""
        effect = Notify(
            session_id=session_id,
            recipient=Participant.MITRA,
            user_id="m9",
            message={"type": "session_resumed", "session_id": session_id},
            dedupe_key=f"x:{session_id}:mitra",
            push=PushMessage("t", "b", {"type": "session_resumed"}),
        )
        (row,) = encode_effects([effect], self.clock.now(), lambda: f"row-{session_id}")
        await add_outbox(self.store, row)
        return row.id

    async def status(self) -> ExtensionStatus:
        (ext,) = (await self.store.dump()).extensions
        return ext.status

    async def close(self, *tasks: asyncio.Task[Any]) -> None:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.push.release.set()
        await self.service.aclose()


async def test_a_request_returns_while_the_push_hangs() -> None:
    rig = _Rig(mitra_on_socket=False)  # the request goes to the mitra by push
    await rig.seed()
    ext_id = await asyncio.wait_for(rig.request(), BOUND)  # before: waited on the push
    dump = await rig.store.dump()
    assert dump.extensions[0].status is ExtensionStatus.PENDING
    assert dump.sessions[0].status is SessionStatus.EXTENDING
    await asyncio.wait_for(rig.push.calls.first_started.wait(), BOUND)
    assert rig.push.calls.finished == 0  # returned while its push was still hanging
    rig.push.release.set()
    await asyncio.wait_for(rig.service.dispatcher.drain(), BOUND)
    assert rig.push.calls.finished == 1
    assert rig.push.sent[0].payload["data"]["extension_id"] == ext_id  # type: ignore[index]
    assert all(ok for _, ok in (await rig.store.dump()).outbox)
    await rig.close()


async def test_an_answer_returns_while_the_push_hangs() -> None:
    rig = _Rig(mitra_on_socket=True)
    rig.sockets.on_session[("s1", Participant.CUSTOMER)] = False  # the answer goes by push
    await rig.seed()
    ext_id = await rig.request()
    await rig.service.dispatcher.drain()
    answered = await asyncio.wait_for(
        rig.service.respond_to_extension(
            extension_id=ext_id, session_id="s1", mitra_id="m1", accepted=True
        ),
        BOUND,
    )
    assert answered.status is ExtensionStatus.ACCEPTED
    await asyncio.wait_for(rig.push.calls.first_started.wait(), BOUND)
    assert rig.push.calls.finished == 0
    await rig.close()


async def test_a_hung_push_does_not_delay_the_sweep() -> None:
    # The deadline is met by the sweep alone, while the dispatch loop is stuck on
    # a push that never answers (a call timeout longer than the test).
    rig = _Rig(mitra_on_socket=True, call_timeout=60, lease_seconds=600)
    await rig.seed()
    await rig.request()  # the mitra is on the socket: no push for it
    await rig.service.dispatcher.drain()
    await rig.write_push_row()
    sweeper = asyncio.create_task(run_sweeper(rig.service, 0.01))
    await asyncio.wait_for(rig.push.calls.first_started.wait(), BOUND)
    await rig.clock.advance(11)  # the deadline passes while the push hangs

    async def resolved() -> bool:
        return await rig.status() is ExtensionStatus.TIMEOUT

    await eventually(resolved, within=BOUND, step=0.01)
    assert rig.push.calls.finished == 0  # resolved while the push was still hanging
    await rig.close(sweeper)


async def test_a_sweep_pass_that_raises_does_not_stop_delivery() -> None:
    rig = _Rig(mitra_on_socket=True)
    rig.push.release.set()  # pushes go through here
    await rig.seed()
    row_id = await rig.write_push_row()
    sweeps = 0

    async def broken_sweep() -> list[Any]:
        nonlocal sweeps
        sweeps += 1
        raise RuntimeError("database gone")

    rig.service.sweep_due = broken_sweep  # type: ignore[method-assign]
    sweeper = asyncio.create_task(run_sweeper(rig.service, 0.01))

    async def delivered() -> bool:
        return any(m.id == row_id and ok for m, ok in (await rig.store.dump()).outbox)

    await eventually(delivered, within=BOUND, step=0.01)
    assert sweeps >= 1  # every sweep pass failed, delivery went on
    await rig.close(sweeper)


async def test_a_dispatch_pass_that_raises_does_not_stop_sweeping() -> None:
    rig = _Rig(mitra_on_socket=True)
    await rig.seed()
    await rig.request()
    await rig.service.dispatcher.drain()
    claims = 0

    async def broken_claim(*args: Any, **kwargs: Any) -> list[Any]:
        nonlocal claims
        claims += 1
        raise RuntimeError("outbox table locked")

    rig.store.outbox.claim = broken_claim  # type: ignore[method-assign]
    sweeper = asyncio.create_task(run_sweeper(rig.service, 0.01))
    await eventually(lambda: _true(claims > 0), within=BOUND, step=0.01)
    await rig.clock.advance(11)

    async def resolved() -> bool:
        return await rig.status() is ExtensionStatus.TIMEOUT

    await eventually(resolved, within=BOUND, step=0.01)
    await rig.close(sweeper)


async def _true(value: bool) -> bool:
    return value


def test_the_lease_must_outlast_the_worst_case_of_one_row() -> None:
    store = MemoryStore()
    kwargs: dict[str, Any] = {
        "clock": VirtualClock(),
        "sockets": MemorySockets(),
        "push": HangingPush(),
        "session_timer": MemorySessionTimer(),
    }
    # A notification makes two calls (socket, then push): 2 x 10 s fits in 30 s.
    OutboxDispatcher(store.outbox, lease_seconds=30, call_timeout=10, **kwargs)
    for lease in (20, 15):
        with pytest.raises(ValueError, match="lease_seconds") as refused:
            OutboxDispatcher(store.outbox, lease_seconds=lease, call_timeout=10, **kwargs)
        # the operator reads why, not only which setting
        assert str(refused.value) == (
            f"lease_seconds ({lease}) must exceed the worst case of one row's calls "
            "(2 x call_timeout 10 s), or a row still being delivered could be claimed "
            "and sent again"
        )
    with pytest.raises(ValueError, match="call_timeout"):
        OutboxDispatcher(store.outbox, call_timeout=0, **kwargs)


# --------------------------------------------- on virtual loop time, two workers


class _LoopClock:
    """Wall time that is the event loop's time: on :class:`VirtualTimeLoop`, the
    lease and the call timeouts run on one virtual time line."""

    def now(self) -> Any:
        return EPOCH + timedelta(seconds=asyncio.get_running_loop().time())


def _on_virtual_loop(main: Any) -> None:
    loop = VirtualTimeLoop()
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()


def test_a_hung_push_is_never_attempted_twice_at_once() -> None:
    """The issue's case: one push sent 4 times because the lease (30 s) ran out
    while the provider call (120 s) still hung.  Two dispatchers with the
    default lease and call timeout, a provider that never answers, five virtual
    minutes: the row is retried, but never while an attempt is in flight."""

    async def main() -> None:
        clock = _LoopClock()
        store = MemoryStore()
        sockets = MemorySockets()
        push = HangingPush()  # never released
        timer = MemorySessionTimer()
        workers = [
            OutboxDispatcher(
                store.outbox, clock=clock, sockets=sockets, push=push, session_timer=timer
            )
            for _ in range(2)
        ]
        row = Notify(
            session_id="s1",
            recipient=Participant.MITRA,
            user_id="m1",
            message={"type": "extension_request"},
            dedupe_key="e1:extension_request:mitra",
            push=PushMessage("t", "b", {}),
        )
        await add_outbox(store, *encode_effects([row], clock.now(), lambda: "r1"))
        tasks = [asyncio.create_task(w.run(interval=1.0)) for w in workers]
        await asyncio.sleep(300)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert push.calls.most_in_flight == 1
        assert push.calls.started >= 3  # timed out, backed off, tried again
        assert push.calls.finished == 0
        (stored,) = store.outbox_rows.values()
        assert stored.delivered_at is None  # retried (then given up on), never twice at once
        assert "did not answer" in (stored.last_error or "")

    _on_virtual_loop(main)


def test_rows_whose_turn_comes_too_late_in_the_lease_are_left_for_later() -> None:
    """Three pushes of one session go one after another; when the third's turn
    comes, less of the lease is left than its worst case: it is not tried now
    (another worker takes it once the lease runs out), so no two attempts of a
    row can overlap."""

    async def main() -> None:
        clock = _LoopClock()
        store = MemoryStore()
        push = HangingPush(hang_calls=2)  # the first two hang until their timeout
        dispatcher = OutboxDispatcher(
            store.outbox,
            clock=clock,
            sockets=MemorySockets(),
            push=push,
            session_timer=MemorySessionTimer(),
        )
        rows = [
            Notify(
                session_id="s1",
                recipient=Participant.MITRA,
                user_id="m1",
                message={"type": "session_resumed", "n": n},
                dedupe_key=f"e1:{n}:mitra",
                push=PushMessage("t", "b", {"n": n}),
            )
            for n in range(3)
        ]
        ids = iter(["r0", "r1", "r2"])
        # rows without a lane: one claim
        encoded = encode_effects(rows, clock.now(), lambda: next(ids))
        await add_outbox(store, *(replace(row, lane=None) for row in encoded))
        report = await dispatcher.dispatch_due()
        assert (report.retried, report.deferred, report.delivered) == (2, 1, 0)
        assert push.calls.started == 2 and push.calls.most_in_flight == 1
        assert store.outbox_rows["r2"].attempts == 0  # not tried, not counted
        await asyncio.sleep(31)  # its lease ran out, the others' backoff too
        report = await dispatcher.dispatch_due()
        assert report.delivered == 3
        assert [p.payload["data"] for p in push.sent] == [{"n": 0}, {"n": 1}, {"n": 2}]
        assert push.calls.most_in_flight == 1

    _on_virtual_loop(main)
