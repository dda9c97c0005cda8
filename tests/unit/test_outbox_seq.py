"""The dispatcher tells each session-timer command and payment event its
row's ``seq``; a store that does not number its rows makes those rows end
dead with the reason, never delivered without a fence."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from extension_fsm.adapters.clock import VirtualClock
from extension_fsm.adapters.memory import (
    MemoryPaymentEvents,
    MemoryPush,
    MemorySessionTimer,
    MemorySockets,
    MemoryStore,
)
from extension_fsm.model import (
    ClearClosureGrace,
    Effect,
    FailureCause,
    PaymentConsumed,
    PaymentFailed,
    SessionExpiryExtended,
    StartClosureGrace,
)
from extension_fsm.outbox import OutboxDispatcher, encode_effects
from extension_fsm.ports import OutboxMessage
from extension_fsm.testing.samples import add_outbox

T0 = datetime(2030, 1, 1, tzinfo=UTC)


class UnnumberedOutbox:
    """A host's outbox store that forgets to set ``seq`` on what it claims."""

    def __init__(self, store: MemoryStore) -> None:
        self._inner = store.outbox

    async def claim(
        self, now: datetime, limit: int, lease_seconds: float, ids: Sequence[str] | None = None
    ) -> list[OutboxMessage]:
        claimed = await self._inner.claim(now, limit, lease_seconds, ids)
        return [replace(m, seq=None) for m in claimed]

    async def mark_delivered(self, message_ids: Sequence[str], at: datetime) -> None:
        await self._inner.mark_delivered(message_ids, at)

    async def mark_retry(self, message_id: str, available_at: datetime, error: str) -> None:
        await self._inner.mark_retry(message_id, available_at, error)

    async def release(self, message_ids: Sequence[str], at: datetime) -> None:
        await self._inner.release(message_ids, at)

    async def mark_dead(self, message_id: str, at: datetime, error: str) -> None:
        await self._inner.mark_dead(message_id, at, error)


async def _write(store: MemoryStore) -> None:
    failed = PaymentFailed("s1", "e1", "p1", "c1", 100, FailureCause.SESSION_ENDED, T0)
    rows = encode_effects([ClearClosureGrace("s1"), failed], T0, iter(["r1", "r2"]).__next__)
    await add_outbox(store, *rows)


def _dispatcher(
    outbox: object, timer: MemorySessionTimer, payments: MemoryPaymentEvents
) -> OutboxDispatcher:
    return OutboxDispatcher(
        outbox,  # type: ignore[arg-type]
        clock=VirtualClock(T0 + timedelta(seconds=1)),
        sockets=MemorySockets(),
        push=MemoryPush(),
        session_timer=timer,
        payment_events=payments,
    )


async def test_fenced_commands_the_dispatcher_passes_each_rows_seq() -> None:
    store, timer, payments = MemoryStore(), MemorySessionTimer(), MemoryPaymentEvents()
    await _write(store)
    report = await _dispatcher(store.outbox, timer, payments).dispatch_due()
    assert report.delivered == 2
    ((message, _), (event_row, _)) = (await store.dump()).outbox
    assert timer.seqs == [message.seq] and message.seq is not None
    assert [e.seq for e in payments.events] == [event_row.seq]
    assert event_row.seq is not None and event_row.seq > message.seq


async def test_fenced_commands_rows_of_a_store_that_does_not_number_them_end_dead() -> None:
    store, timer, payments = MemoryStore(), MemorySessionTimer(), MemoryPaymentEvents()
    await _write(store)
    report = await _dispatcher(UnnumberedOutbox(store), timer, payments).dispatch_due()
    assert (report.delivered, report.dead) == (0, 2)
    assert timer.calls == [] and payments.events == []
    assert all(delivered is False for _, delivered in (await store.dump()).outbox)
    for row in store.outbox_rows.values():
        assert row.dead and "has no seq" in (row.last_error or "")


class ZeroBasedOutbox(UnnumberedOutbox):
    """A host's outbox store whose numbering starts at 0 (as a sequence may)."""

    async def claim(
        self, now: datetime, limit: int, lease_seconds: float, ids: Sequence[str] | None = None
    ) -> list[OutboxMessage]:
        claimed = await self._inner.claim(now, limit, lease_seconds, ids)
        return [replace(m, seq=m.seq - 1) for m in claimed if m.seq is not None]


async def test_every_fenced_kind_is_told_its_rows_seq_as_numbered_zero_included() -> None:
    store, timer, payments = MemoryStore(), MemorySessionTimer(), MemoryPaymentEvents()
    deadline, expiry = T0 + timedelta(minutes=1), T0 + timedelta(minutes=30)
    consumed = PaymentConsumed("s1", "e1", "p1", "c1", 100, 30, False, T0)
    failed = PaymentFailed("s1", "e2", "p2", "c1", 100, FailureCause.SESSION_ENDED, T0)
    effects: list[Effect] = [
        StartClosureGrace("s1", deadline),
        consumed,
        ClearClosureGrace("s1"),
        SessionExpiryExtended("s1", expiry),
        failed,
    ]
    rows = encode_effects(effects, T0, iter(["r1", "r2", "r3", "r4", "r5"]).__next__)
    await add_outbox(store, *rows)
    report = await _dispatcher(ZeroBasedOutbox(store), timer, payments).dispatch_due()
    assert (report.delivered, report.dead, report.retried) == (5, 0, 0)
    # the store numbered them 1..5 in commit order; this one hands them out from 0
    assert timer.calls == [
        ("start_closure_grace", "s1", deadline),
        ("clear_closure_grace", "s1", None),
        ("expiry_extended", "s1", expiry),
    ]
    assert timer.seqs == [0, 2, 3]
    assert payments.events == [consumed, failed]
    assert [e.seq for e in payments.events] == [1, 4]  # seq is left out of ==
