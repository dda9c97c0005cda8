"""The payment handler the host guide shows, run as a host would run it: the
block is read from ``docs/host-guide.md`` (the same text tests/docs runs as a
script) and its ``PaymentHandler`` is wired into a service.

It sees the payment row already moved by the deciding commit (so the old
``consume_payment_session`` would refuse), runs each side effect once though
an event is delivered again after a failure, and gets what it needs from the
event: ids, amount, previous and new status, cause, ``dedupe_key``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from extension_fsm import (
    ExtensionService,
    FailureCause,
    PaymentConsumed,
    PaymentFailed,
    PaymentStatus,
)
from extension_fsm.adapters.memory import MemoryStore
from extension_fsm.simulator import World
from tests.unit._support import new_world

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "host-guide.md"


def _guide_block() -> dict[str, Any]:
    """The namespace of the guide's payment-handler block (its demo not run)."""
    blocks = re.findall(r"^```python\n(.*?)^```", GUIDE.read_text(), re.S | re.M)
    (code,) = [b for b in blocks if "class PaymentHandler" in b]
    namespace: dict[str, Any] = {"__name__": "host_guide_payment_handler"}
    exec(compile(code, str(GUIDE), "exec"), namespace)
    return namespace


class _Watched:
    """The guide's handler, whose first ``fail`` calls raise after it ran (the
    answer lost, as when a call outlives its timeout: the event comes again),
    noting the payment row's status at each call."""

    def __init__(self, handler: Any, store: MemoryStore, fail: int) -> None:
        self.handler = handler
        self.store = store
        self.fail = fail
        self.seen: list[tuple[str, PaymentStatus]] = []

    async def _status(self, payment_session_id: str) -> PaymentStatus:
        dump = await self.store.dump()
        (row,) = [p for p in dump.payments if p.id == payment_session_id]
        return row.status

    async def consumed(self, event: PaymentConsumed) -> None:
        self.seen.append((event.dedupe_key, await self._status(event.payment_session_id)))
        await self.handler.consumed(event)
        self._maybe_fail()

    async def failed(self, event: PaymentFailed) -> None:
        self.seen.append((event.dedupe_key, await self._status(event.payment_session_id)))
        await self.handler.failed(event)
        self._maybe_fail()

    def _maybe_fail(self) -> None:
        if self.fail:
            self.fail -= 1
            raise ConnectionError("the answer was lost after the side effects ran")


async def _service(world: World, events: _Watched) -> ExtensionService:
    store = world.store
    assert isinstance(store, MemoryStore)
    return ExtensionService(
        store,
        clock=world.clock,
        config=world.config,
        sockets=world.sockets,
        presence=world.presence,
        push=world.push,
        session_timer=world.session_timer,
        payment_events=events,
    )


async def _flow(accepted: bool, *, fail: int) -> tuple[Any, _Watched, str, ExtensionService]:
    world, _ = await new_world()
    store = world.store
    assert isinstance(store, MemoryStore)
    guide = _guide_block()
    payments = guide["LegacyPayments"]()
    payments.status["p1"] = "confirmed"  # the host's own copy of the row
    events = _Watched(guide["PaymentHandler"](payments), store, fail)
    service = await _service(world, events)
    ext = await service.request_extension(
        session_id="s1",
        customer_id="c1",
        duration_minutes=30,
        price=15000,
        extension_payment_session_id="p1",
    )
    await service.respond_to_extension(
        extension_id=ext.id, session_id="s1", mitra_id="m1", accepted=accepted
    )
    await service.dispatcher.drain()
    for _ in range(fail):  # each failure is retried after its backoff
        await world.clock.advance(60)
        await service.dispatcher.dispatch_due()
    return payments, events, ext.id, service


@pytest.mark.parametrize("fail", [0, 1, 2])
async def test_payment_handler_from_the_guide_charges_once(fail: int) -> None:
    payments, events, ext_id, service = await _flow(True, fail=fail)
    try:
        key = f"{ext_id}:payment_consumed:p1"
        # Told once per delivery; the row was consumed before the first one.
        assert events.seen == [(key, PaymentStatus.CONSUMED)] * (fail + 1)
        assert payments.earnings == [("p1", 15000)]  # the side effect, once
        assert payments.released == []
        # The old entry point would refuse what the library already did: the
        # guide's point in calling only the side-effect half.
        payments.status["p1"] = "consumed"
        with pytest.raises(ValueError, match="not confirmed"):
            payments.consume_payment_session("p1", 15000)
    finally:
        await service.aclose()


async def test_payment_handler_from_the_guide_releases_a_rejected_payment_once() -> None:
    payments, events, ext_id, service = await _flow(False, fail=1)
    try:
        key = f"{ext_id}:payment_failed:p1"
        assert events.seen == [(key, PaymentStatus.FAILED)] * 2
        assert payments.released == [("p1", 15000)]
        assert payments.failed_pairings == [("p1", FailureCause.EXTENSION_REJECTED.value)]
        assert payments.earnings == []
    finally:
        await service.aclose()


async def test_payment_handler_repeat_delivery_is_dropped_by_dedupe_key() -> None:
    guide = _guide_block()
    payments = guide["LegacyPayments"]()
    handler = guide["PaymentHandler"](payments)
    from datetime import UTC, datetime

    at = datetime(2026, 1, 1, tzinfo=UTC)
    first = PaymentConsumed("s1", "e1", "p1", "c1", 15000, 30, False, at)
    second = PaymentConsumed("s1", "e2", "p2", "c1", 15000, 30, True, at)
    for event in (first, first, second, first):
        await handler.consumed(event)
    assert payments.earnings == [("p1", 15000), ("p2", 15000)]


def test_payment_handler_events_carry_previous_and_new_status() -> None:
    from datetime import UTC, datetime

    at = datetime(2026, 1, 1, tzinfo=UTC)
    consumed = PaymentConsumed("s1", "e1", "p1", "c1", 15000, 30, False, at)
    failed = PaymentFailed("s1", "e1", "p1", "c1", 15000, FailureCause.SESSION_ENDED, at)
    assert (consumed.previous_status, consumed.new_status) == (
        PaymentStatus.CONFIRMED,
        PaymentStatus.CONSUMED,
    )
    assert (failed.previous_status, failed.new_status) == (
        PaymentStatus.CONFIRMED,
        PaymentStatus.FAILED,
    )
