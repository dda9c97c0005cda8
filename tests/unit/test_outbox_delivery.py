"""What one row's delivery does, seen from outside the dispatcher: which
dependency a timed-out row names, the default lease and call timeout, the
order within a session and the independence of sessions inside one claim,
``deliver`` along a lane, where socket and push messages go, how failures
are logged, and what the background deliveries leave behind.

Every wait is bounded (a hang fails the test); nothing asserts a duration.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import weakref
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest

from extension_fsm import (
    DeliveryError,
    DispatchReport,
    FailureCause,
    OutboxDispatcher,
    Participant,
    PaymentConsumed,
    PaymentFailed,
)
from extension_fsm.adapters.clock import EPOCH, VirtualClock
from extension_fsm.adapters.memory import (
    MemoryPush,
    MemorySessionTimer,
    MemorySockets,
    MemoryStore,
)
from extension_fsm.errors import StoreClosed
from extension_fsm.model import (
    ClearClosureGrace,
    Effect,
    JSONValue,
    Notify,
    PushMessage,
    SessionExpiryExtended,
    StartClosureGrace,
)
from extension_fsm.outbox import BACKGROUND_TASK_NAME, LoggingPaymentEvents, encode_effects
from extension_fsm.ports import OutboxMessage
from extension_fsm.testing.loop import VirtualTimeLoop
from extension_fsm.testing.samples import add_outbox
from tests.fakes.hanging import HangingPush

BOUND = 10.0  # seconds: the most any real wait below may take before the test fails


async def _write(
    store: MemoryStore, effects: Sequence[Effect], now: datetime, *, lanes: bool = True
) -> list[str]:
    """Commit ``effects`` as outbox rows; without ``lanes``, as rows written
    before lanes existed (one claim then holds several rows of a session)."""
    ids = iter(f"r{n}" for n in range(len(effects)))
    rows = encode_effects(effects, now, lambda: next(ids))
    if not lanes:
        rows = [replace(row, lane=None) for row in rows]
    await add_outbox(store, *rows)
    return [r.id for r in rows]


def _notify(n: int, session_id: str = "s1", *, push: bool = False) -> Notify:
    return Notify(
        session_id=session_id,
        recipient=Participant.MITRA,
        user_id=f"m-{session_id}",
        message={"type": "session_resumed", "n": n},
        dedupe_key=f"e1:k{n}:mitra",
        push=PushMessage("t", "b", {"n": n}) if push else None,
    )


def _consumed(session_id: str, at: datetime) -> PaymentConsumed:
    return PaymentConsumed(
        session_id=session_id,
        extension_id="e1",
        payment_session_id="p1",
        customer_id="c1",
        amount=15000,
        duration_minutes=30,
        via_timeout=False,
        at=at,
    )


def _failed(session_id: str, at: datetime) -> PaymentFailed:
    return PaymentFailed(
        session_id=session_id,
        extension_id="e2",
        payment_session_id="p2",
        customer_id="c2",
        amount=20000,
        cause=FailureCause.EXTENSION_REJECTED,
        at=at,
    )


# ----------------------------------------------- on virtual loop time: timeouts


class _LoopClock:
    """Wall time that is the event loop's time (one virtual time line)."""

    def now(self) -> datetime:
        return EPOCH + timedelta(seconds=asyncio.get_running_loop().time())


def _on_virtual_loop(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    loop = VirtualTimeLoop()
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()


async def _forever() -> None:
    await asyncio.Event().wait()


class _HungSockets(MemorySockets):
    """Sends to session ``"sock"`` never answer; the others are taken by no socket."""

    async def send(
        self, session_id: str, participant: Participant, message: Mapping[str, JSONValue]
    ) -> bool:
        if session_id == "sock":
            await _forever()
        return False


class _HungTimer(MemorySessionTimer):
    async def start_closure_grace(self, session_id: str, deadline: datetime, *, seq: int) -> None:
        await _forever()

    async def clear_closure_grace(self, session_id: str, *, seq: int) -> None:
        await _forever()

    async def expiry_extended(self, session_id: str, expires_at: datetime, *, seq: int) -> None:
        await _forever()


class _HungPayments:
    async def consumed(self, event: PaymentConsumed) -> None:
        await _forever()

    async def failed(self, event: PaymentFailed) -> None:
        await _forever()


def test_a_call_that_outlives_the_default_timeout_names_the_dependency() -> None:
    """Every dependency hangs: with the defaults, each row's claim leases it for
    30 s, each call gives up after 10 s, and the row's last error says which
    dependency did not answer (what an operator reads on a stuck row)."""

    async def main() -> None:
        clock = _LoopClock()
        store = MemoryStore()
        dispatcher = OutboxDispatcher(
            store.outbox,
            clock=clock,
            sockets=_HungSockets(),
            push=HangingPush(),  # never released
            session_timer=_HungTimer(),
            payment_events=_HungPayments(),
        )
        t0 = clock.now()
        effects: list[tuple[Effect, str]] = [
            (_notify(0, "sock"), "socket send"),
            (_notify(1, "phone", push=True), "push"),
            (StartClosureGrace("a", t0), "session timer"),
            (ClearClosureGrace("b"), "session timer"),
            (SessionExpiryExtended("c", t0), "session timer"),
            (_consumed("d", t0), "payment events"),
            (_failed("e", t0), "payment events"),
        ]
        ids = await _write(store, [e for e, _ in effects], t0)
        task = asyncio.create_task(dispatcher.dispatch_due())
        await asyncio.sleep(5)  # every call is hanging now
        for row_id in ids:
            assert store.outbox_rows[row_id].available_at == t0 + timedelta(seconds=30)
        report = await task
        assert report == DispatchReport(retried=len(ids))
        for row_id, (_, what) in zip(ids, effects, strict=True):
            row = store.outbox_rows[row_id]
            assert row.last_error == f"DeliveryError: {what} did not answer within 10.0 s"
            assert row.delivered_at is None and not row.dead

    _on_virtual_loop(main)


def test_a_call_timeout_under_a_second_is_honoured() -> None:
    async def main() -> None:
        clock = _LoopClock()
        store = MemoryStore()
        dispatcher = OutboxDispatcher(
            store.outbox,
            clock=clock,
            sockets=MemorySockets(),
            push=HangingPush(),
            session_timer=MemorySessionTimer(),
            lease_seconds=2,
            call_timeout=0.5,
        )
        (row_id,) = await _write(store, [_notify(0, push=True)], clock.now())
        assert await dispatcher.dispatch_due() == DispatchReport(retried=1)
        error = store.outbox_rows[row_id].last_error
        assert error == "DeliveryError: push did not answer within 0.5 s"

    _on_virtual_loop(main)


def test_every_row_whose_turn_comes_too_late_is_counted_deferred() -> None:
    """Four pushes of one session, the first two hanging until their timeout:
    the last two are left for later, and the report counts both."""

    async def main() -> None:
        clock = _LoopClock()
        store = MemoryStore()
        dispatcher = OutboxDispatcher(
            store.outbox,
            clock=clock,
            sockets=MemorySockets(),
            push=HangingPush(hang_calls=2),
            session_timer=MemorySessionTimer(),
        )
        effects = [_notify(n, push=True) for n in range(4)]
        ids = await _write(store, effects, clock.now(), lanes=False)
        report = await dispatcher.dispatch_due()
        assert report == DispatchReport(retried=2, deferred=2)
        assert [store.outbox_rows[i].attempts for i in ids] == [1, 1, 0, 0]

    _on_virtual_loop(main)


# ------------------------------------------- order and independence in a claim


class _SlowFirstSockets(MemorySockets):
    """Message ``n`` takes ``10 - n`` turns of the loop: sent concurrently, the
    later messages would arrive first.  Session ``"slow"`` waits for ``gate``."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()

    async def send(
        self, session_id: str, participant: Participant, message: Mapping[str, JSONValue]
    ) -> bool:
        if session_id == "slow":
            await self.gate.wait()
        n = message["n"]
        assert isinstance(n, int)
        for _ in range(10 - n):
            await asyncio.sleep(0)
        return await super().send(session_id, participant, message)


def _dispatcher(
    store: MemoryStore, sockets: MemorySockets, push: MemoryPush | None = None
) -> OutboxDispatcher:
    return OutboxDispatcher(
        store.outbox,
        clock=VirtualClock(),
        sockets=sockets,
        push=push or MemoryPush(),
        session_timer=MemorySessionTimer(),
    )


async def test_notifications_of_one_session_in_one_claim_go_in_the_order_written() -> None:
    store = MemoryStore()
    sockets = _SlowFirstSockets()
    dispatcher = _dispatcher(store, sockets)
    await _write(store, [_notify(n) for n in range(4)], VirtualClock().now())
    assert await dispatcher.dispatch_due() == DispatchReport(delivered=4)
    assert [d.payload["n"] for d in sockets.sent] == [0, 1, 2, 3]


async def test_a_hanging_session_does_not_hold_up_another_in_the_same_claim() -> None:
    store = MemoryStore()
    sockets = _SlowFirstSockets()
    dispatcher = _dispatcher(store, sockets)
    await _write(store, [_notify(0, "slow"), _notify(1, "s2")], VirtualClock().now())
    task = asyncio.create_task(dispatcher.dispatch_due())
    try:
        for _ in range(1000):  # "s2" takes ten turns of the loop
            if sockets.sent:
                break
            await asyncio.sleep(0)
        assert [d.session_id for d in sockets.sent] == ["s2"]  # "slow" still waits
    finally:
        sockets.gate.set()
    async with asyncio.timeout(BOUND):
        assert await task == DispatchReport(delivered=2)


async def test_deliver_follows_a_lane_to_its_end_in_one_call() -> None:
    """``deliver`` of a lane's rows takes one claim after another until every
    named row is done, and reports them all; rows already delivered are not
    claimed again."""
    store = MemoryStore()
    timer = MemorySessionTimer()
    clock = VirtualClock()
    dispatcher = OutboxDispatcher(
        store.outbox, clock=clock, sockets=MemorySockets(), push=MemoryPush(), session_timer=timer
    )
    times = [clock.now() + timedelta(minutes=k) for k in range(3)]
    ids = await _write(store, [SessionExpiryExtended("s1", at) for at in times], clock.now())
    assert await dispatcher.deliver(ids) == DispatchReport(delivered=3)
    assert timer.calls == [("expiry_extended", "s1", at) for at in times]
    assert all(store.outbox_rows[i].delivered_at is not None for i in ids)
    # Named again once delivered: nothing left to claim, an empty report.
    assert await dispatcher.deliver(ids) == DispatchReport()
    assert len(timer.calls) == 3


async def test_socket_and_push_go_to_the_rows_recipient() -> None:
    store = MemoryStore()
    sockets, push = MemorySockets(), MemoryPush()
    dispatcher = _dispatcher(store, sockets, push)
    await _write(store, [_notify(0, "s7", push=True)], VirtualClock().now())
    assert await dispatcher.dispatch_due() == DispatchReport(delivered=1)
    (sent,) = sockets.sent
    assert (sent.session_id, sent.participant, sent.taken) == ("s7", Participant.MITRA, False)
    (pushed,) = push.sent
    assert (pushed.participant, pushed.user_id) == (Participant.MITRA, "m-s7")


class _RecordingOutbox:
    """The memory outbox, recording the marks the dispatcher makes."""

    def __init__(self, store: MemoryStore) -> None:
        self._inner = store.outbox
        self.marks: list[tuple[str, Any, datetime]] = []

    async def claim(
        self,
        now: datetime,
        limit: int,
        lease_seconds: float,
        ids: Sequence[str] | None = None,
    ) -> list[OutboxMessage]:
        return await self._inner.claim(now, limit, lease_seconds, ids)

    async def mark_delivered(self, ids: Sequence[str], at: datetime) -> None:
        self.marks.append(("delivered", list(ids), at))
        await self._inner.mark_delivered(ids, at)

    async def mark_retry(self, message_id: str, available_at: datetime, error: str) -> None:
        self.marks.append(("retry", message_id, available_at))
        await self._inner.mark_retry(message_id, available_at, error)

    async def release(self, message_ids: Sequence[str], at: datetime) -> None:
        self.marks.append(("released", list(message_ids), at))
        await self._inner.release(message_ids, at)

    async def mark_dead(self, message_id: str, at: datetime, error: str) -> None:
        self.marks.append(("dead", message_id, at))
        await self._inner.mark_dead(message_id, at, error)


async def test_rows_are_marked_at_the_clocks_time() -> None:
    """Delivered and dead rows are stamped with the dispatcher's clock (a
    database adapter keeps the dead time: a dead row without one would not be
    dead), a retried one with its next try."""
    store = MemoryStore()
    clock = VirtualClock()
    await clock.advance(100)
    push = MemoryPush()
    push.failures.extend(
        [DeliveryError("busy", retryable=True), DeliveryError("unregistered", retryable=False)]
    )
    outbox = _RecordingOutbox(store)
    dispatcher = OutboxDispatcher(
        outbox,
        clock=clock,
        sockets=MemorySockets(),
        push=push,
        session_timer=MemorySessionTimer(),
        base_backoff=3,
    )
    await _write(store, [_notify(n, push=True) for n in range(3)], clock.now(), lanes=False)
    assert await dispatcher.dispatch_due() == DispatchReport(delivered=1, retried=1, dead=1)
    now = clock.now()
    assert sorted(outbox.marks) == [
        ("dead", "r1", now),
        ("delivered", ["r2"], now),
        ("retry", "r0", now + timedelta(seconds=3)),
    ]


# ------------------------------------------------------------------- the logs


async def test_an_adapter_bug_is_logged_with_its_row_and_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = MemoryStore()

    class _Broken(MemorySockets):
        async def send(self, *args: Any) -> bool:
            raise RuntimeError("adapter bug")

    dispatcher = _dispatcher(store, _Broken())
    (row_id,) = await _write(store, [_notify(0)], VirtualClock().now())
    with caplog.at_level(logging.ERROR, logger="extension_fsm.outbox"):
        assert await dispatcher.dispatch_due() == DispatchReport(retried=1)
    (record,) = [r for r in caplog.records if r.name == "extension_fsm.outbox"]
    assert record.getMessage() == f"outbox row {row_id} failed"
    assert record.exc_info is not None and isinstance(record.exc_info[1], RuntimeError)


async def test_the_default_payment_events_log_each_payment(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A host without a payment port still sees, at INFO, which payment of
    which extension and session was consumed (and the amount) or failed (and
    why)."""
    events = LoggingPaymentEvents()
    now = VirtualClock().now()
    with caplog.at_level(logging.INFO, logger="extension_fsm.outbox"):
        await events.consumed(_consumed("s1", now))
        await events.failed(_failed("s2", now))
    consumed, failed = (r for r in caplog.records if r.name == "extension_fsm.outbox")
    assert consumed.levelno == failed.levelno == logging.INFO
    text = consumed.getMessage()
    assert "payment p1 consumed" in text
    assert all(part in text for part in ("extension e1", "session s1", "amount 15000"))
    text = failed.getMessage()
    assert "payment p2 failed" in text
    assert all(part in text for part in ("extension e2", "session s2", "extension_rejected"))


# ------------------------------------------------------ background deliveries


class _BrokenClaims:
    """An outbox whose claims fail (the database went away)."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    async def claim(
        self,
        now: datetime,
        limit: int,
        lease_seconds: float,
        ids: Sequence[str] | None = None,
    ) -> list[OutboxMessage]:
        await asyncio.sleep(0)
        raise self.error

    async def mark_delivered(self, ids: Sequence[str], at: datetime) -> None:
        raise AssertionError("nothing was claimed")

    async def mark_retry(self, message_id: str, available_at: datetime, error: str) -> None:
        raise AssertionError("nothing was claimed")

    async def release(self, message_ids: Sequence[str], at: datetime) -> None:
        raise AssertionError("nothing was claimed")

    async def mark_dead(self, message_id: str, at: datetime, error: str) -> None:
        raise AssertionError("nothing was claimed")


async def test_a_failed_background_delivery_is_logged_and_not_kept(
    caplog: pytest.LogCaptureFixture,
) -> None:
    error = ConnectionError("database went away")
    dispatcher = OutboxDispatcher(
        _BrokenClaims(error),
        clock=VirtualClock(),
        sockets=MemorySockets(),
        push=MemoryPush(),
        session_timer=MemorySessionTimer(),
    )
    with caplog.at_level(logging.ERROR, logger="extension_fsm.outbox"):
        dispatcher.deliver_soon(["r0"])
        (task,) = [t for t in asyncio.all_tasks() if t.get_name() == BACKGROUND_TASK_NAME]
        assert dispatcher.in_flight == 1
        async with asyncio.timeout(BOUND):
            await dispatcher.drain()
    assert task.done() and dispatcher.in_flight == 0
    (record,) = [r for r in caplog.records if r.name == "extension_fsm.outbox"]
    assert record.levelno == logging.ERROR
    assert record.getMessage() == "post-commit delivery failed; left in the outbox"
    assert record.exc_info is not None
    assert record.exc_info[:2] == (ConnectionError, error)
    ref = weakref.ref(task)
    del task
    gc.collect()
    assert ref() is None  # the dispatcher keeps no finished delivery


async def test_a_background_delivery_that_outlived_its_store_is_one_info_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The store closed first (the host shut down): the rows are left as on a
    crash, which is no error, so no traceback is logged."""
    dispatcher = OutboxDispatcher(
        _BrokenClaims(StoreClosed()),
        clock=VirtualClock(),
        sockets=MemorySockets(),
        push=MemoryPush(),
        session_timer=MemorySessionTimer(),
    )
    with caplog.at_level(logging.DEBUG, logger="extension_fsm.outbox"):
        dispatcher.deliver_soon(["r0"])
        async with asyncio.timeout(BOUND):
            await dispatcher.drain()
    assert dispatcher.in_flight == 0
    (record,) = [r for r in caplog.records if r.name == "extension_fsm.outbox"]
    assert record.levelno == logging.INFO
    assert record.getMessage() == "store closed before a post-commit delivery; left in the outbox"
    assert not record.exc_info


async def test_drain_waits_for_every_background_delivery_and_logs_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = MemoryStore()
    sockets = _SlowFirstSockets()
    dispatcher = _dispatcher(store, sockets)
    ids = await _write(store, [_notify(n, f"s{n}") for n in range(3)], VirtualClock().now())
    with caplog.at_level(logging.DEBUG, logger="extension_fsm.outbox"):
        for row_id in ids:
            dispatcher.deliver_soon([row_id])
        names = {t.get_name() for t in asyncio.all_tasks() if t is not asyncio.current_task()}
        assert names == {BACKGROUND_TASK_NAME}
        async with asyncio.timeout(BOUND):
            await dispatcher.drain()
    assert sorted(d.payload["n"] for d in sockets.sent) == [0, 1, 2]
    assert dispatcher.in_flight == 0
    assert all(store.outbox_rows[i].delivered_at is not None for i in ids)
    assert [r for r in caplog.records if r.name == "extension_fsm.outbox"] == []


class _SlowSockets(MemorySockets):
    """Each send takes ``seconds`` (of the loop's time) before it is taken."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    async def send(
        self, session_id: str, participant: Participant, message: Mapping[str, JSONValue]
    ) -> bool:
        await asyncio.sleep(self.seconds)
        return await super().send(session_id, participant, message)


@pytest.mark.parametrize(("seconds", "delivered"), [(4.9, True), (5.1, False)])
def test_aclose_gives_background_deliveries_five_seconds_by_default(
    seconds: float, delivered: bool
) -> None:
    """``aclose()`` with no ``grace`` waits up to 5 s (of the loop's time) for
    background deliveries, then cancels what is left (its rows stay)."""

    async def main() -> None:
        clock = _LoopClock()
        store = MemoryStore()
        dispatcher = OutboxDispatcher(
            store.outbox,
            clock=clock,
            sockets=_SlowSockets(seconds),
            push=MemoryPush(),
            session_timer=MemorySessionTimer(),
        )
        (row_id,) = await _write(store, [_notify(0)], clock.now())
        dispatcher.deliver_soon([row_id])
        await dispatcher.aclose()
        assert dispatcher.in_flight == 0
        assert (store.outbox_rows[row_id].delivered_at is not None) is delivered

    _on_virtual_loop(main)


@pytest.mark.parametrize("grace", [0.0, -1.0])
async def test_aclose_without_grace_gives_even_an_instant_delivery_no_turn(grace: float) -> None:
    """No grace: a background delivery not started yet is cancelled before it
    runs, however quick it would have been; its rows stay in the outbox."""
    store = MemoryStore()
    sockets = MemorySockets()
    dispatcher = _dispatcher(store, sockets)
    ids = await _write(store, [_notify(0), _notify(1, "s2")], VirtualClock().now())
    dispatcher.deliver_soon(ids)
    async with asyncio.timeout(BOUND):
        await dispatcher.aclose(grace=grace)
    assert sockets.sent == []
    assert dispatcher.in_flight == 0
    assert all(store.outbox_rows[i].delivered_at is None for i in ids)


# ------------------------------------------- a host's outbox without release


class _NoRelease:
    """A host's outbox store without the optional ``release`` (the port's other
    four methods, the memory store's)."""

    def __init__(self, store: MemoryStore) -> None:
        inner = store.outbox
        self.claim = inner.claim
        self.mark_delivered = inner.mark_delivered
        self.mark_retry = inner.mark_retry
        self.mark_dead = inner.mark_dead


async def test_without_release_the_rows_behind_a_failed_one_wait_out_their_lease() -> None:
    """A lane's head fails: the rows claimed behind it are not tried, and a
    store that cannot hand them back leaves them leased; nothing breaks, and
    once the lease has run out they go, in order, after the head."""
    store = MemoryStore()
    clock = VirtualClock()
    push = MemoryPush()
    push.failures.append(DeliveryError("busy", retryable=True))
    dispatcher = OutboxDispatcher(
        _NoRelease(store),  # type: ignore[arg-type]
        clock=clock,
        sockets=MemorySockets(),
        push=push,
        session_timer=MemorySessionTimer(),
        base_backoff=1,
        lease_seconds=30,
    )
    await _write(store, [_notify(n, push=True) for n in range(3)], clock.now())  # one lane
    first = await dispatcher.dispatch_due()
    assert (first.delivered, first.retried, first.dead) == (0, 1, 0)
    assert push.sent == []  # only the head was tried, and it failed
    await clock.advance(5)  # the head is due again; the two behind it are still leased
    assert (await dispatcher.dispatch_due()).delivered == 1
    assert [d.payload["data"] for d in push.sent] == [{"n": 0}]
    await clock.advance(30)  # their lease has run out
    later = await dispatcher.dispatch_due()
    assert (later.delivered, later.retried, later.dead) == (2, 0, 0)
    assert [d.payload["data"] for d in push.sent] == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert all(done for _, done in (await store.dump()).outbox)
