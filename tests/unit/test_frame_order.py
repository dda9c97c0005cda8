"""Each participant receives a session's frames in decision order, even when a
send fails and is retried: a later frame waits for the earlier one of the same
recipient; a frame given up on (dead) no longer holds the frames behind it.

The service runs over the memory store with a socket layer that fails once on
one message type (parametrised over every type of the flow), and a push that
fails once on that type too, so the row is retried whichever way it would
have gone.  Each participant's received sequence, socket and push together,
is compared with the order the decisions produced.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import pytest

from extension_fsm import (
    DeliveryError,
    DispatchReport,
    ExtensionService,
    OutboxDispatcher,
    Participant,
    PaymentSession,
    PaymentStatus,
    PushMessage,
    Session,
    SessionStatus,
    TimeoutAction,
)
from extension_fsm.adapters.clock import VirtualClock
from extension_fsm.adapters.memory import MemoryPresence, MemorySessionTimer, MemoryStore
from extension_fsm.model import JSONValue

MITRA, CUSTOMER = Participant.MITRA, Participant.CUSTOMER
NOW = datetime(2026, 5, 21, 5, 0, tzinfo=UTC)

#: what each participant receives, in decision order, for a request and its answer
EXPECTED = {
    "accept": {
        MITRA: ["extension_request", "session_resumed"],
        CUSTOMER: ["session_paused", "extension_response", "session_resumed"],
    },
    "reject": {
        MITRA: ["extension_request", "session_closing"],
        CUSTOMER: ["session_paused", "extension_response", "session_closing"],
    },
}
CASES = [
    (flow, kind, to)
    for flow, frames in EXPECTED.items()
    for to, kinds in frames.items()
    for kind in dict.fromkeys(kinds)
]


class _Config:
    async def extension_timeout_seconds(self) -> int:
        return 60

    async def extension_timeout_action(self) -> TimeoutAction | str:
        return TimeoutAction.AUTO_REJECT

    async def closure_grace_seconds(self) -> int:
        return 60


class _Phones:
    """Both participants' sockets (always connected) and phones; what each
    received, in arrival order.  ``fail`` makes the socket send (and the push)
    of one message type to one recipient fail ``times`` times."""

    def __init__(self, kind: str, to: Participant, *, times: int = 1) -> None:
        self.fail = (kind, to)
        self.socket_failures = times
        self.push_failures = times
        self.received: dict[Participant, list[str]] = {MITRA: [], CUSTOMER: []}

    async def send(
        self, session_id: str, participant: Participant, message: Mapping[str, JSONValue]
    ) -> bool:
        kind = str(message["type"])
        if (kind, participant) == self.fail and self.socket_failures > 0:
            self.socket_failures -= 1
            raise DeliveryError("the socket layer failed this once", retryable=True)
        self.received[participant].append(kind)
        return True

    async def is_connected(self, participant: Participant, user_id: str) -> bool:
        return True

    async def push(self, participant: Participant, user_id: str, message: PushMessage) -> None:
        kind = str(message.data["type"])
        if (kind, participant) == self.fail and self.push_failures > 0:
            self.push_failures -= 1
            raise DeliveryError("the push service failed this once", retryable=True)
        self.received[participant].append(kind)


class _PushSender:
    def __init__(self, phones: _Phones) -> None:
        self.phones = phones

    async def send(self, participant: Participant, user_id: str, message: PushMessage) -> None:
        await self.phones.push(participant, user_id, message)


async def _run(flow: str, phones: _Phones, *, passes: int) -> list[DispatchReport]:
    """A request and its answer; then ``passes`` dispatch passes a second apart."""
    clock = VirtualClock(NOW)
    store = MemoryStore()
    store.add_session(
        Session("s1", "c1", "m1", SessionStatus.ACTIVE, NOW + timedelta(minutes=5), "Sari")
    )
    store.add_payment(PaymentSession("p1", "c1", PaymentStatus.CONFIRMED, 15000))
    timer = MemorySessionTimer()
    push = _PushSender(phones)
    dispatcher = OutboxDispatcher(
        store.outbox,
        clock=clock,
        sockets=phones,
        push=push,
        session_timer=timer,
        base_backoff=1.0,
    )
    service = ExtensionService(
        store,
        clock=clock,
        config=_Config(),
        sockets=phones,
        presence=MemoryPresence(),
        push=push,
        session_timer=timer,
        dispatcher=dispatcher,
    )
    try:
        ext = await service.request_extension(
            session_id="s1",
            customer_id="c1",
            duration_minutes=15,
            price=15000,
            extension_payment_session_id="p1",
        )
        await dispatcher.drain()
        await service.respond_to_extension(
            extension_id=ext.id, session_id="s1", mitra_id="m1", accepted=flow == "accept"
        )
        await dispatcher.drain()
        reports = []
        for _ in range(passes):
            await clock.advance(1)
            reports.append(await dispatcher.dispatch_due())
        return reports
    finally:
        await service.aclose()


@pytest.mark.parametrize(("flow", "kind", "to"), CASES, ids=lambda v: str(v))
async def test_frame_order_holds_when_one_send_fails(flow: str, kind: str, to: Participant) -> None:
    phones = _Phones(kind, to)
    await _run(flow, phones, passes=5)
    assert phones.received == EXPECTED[flow]  # each frame once, in decision order


async def test_frame_order_a_frame_given_up_on_does_not_block_the_rest() -> None:
    """``session_paused`` (no push) never gets through: after the notification
    budget it is given up on, and the customer's later frames go out."""
    phones = _Phones("session_paused", CUSTOMER, times=1_000)
    reports = await _run("accept", phones, passes=120)
    assert sum(r.dead for r in reports) == 1
    assert phones.received == {
        MITRA: ["extension_request", "session_resumed"],
        CUSTOMER: ["extension_response", "session_resumed"],
    }


async def test_frame_order_one_recipients_failure_does_not_hold_the_other() -> None:
    """The customer's stuck frame holds only the customer's lane: the mitra
    gets every frame of theirs at once."""
    phones = _Phones("session_paused", CUSTOMER, times=1_000)
    await _run("accept", phones, passes=0)
    assert phones.received == {MITRA: ["extension_request", "session_resumed"], CUSTOMER: []}
