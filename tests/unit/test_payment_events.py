"""Payment events for the host: written in the deciding commit, delivered after
it at least once with a stable dedupe key, retried with backoff, never able
to undo the decision; one per payment the flow consumes or fails, with the
cause the seed tagged its failed-pairings audit row with."""

from __future__ import annotations

import pytest

from extension_fsm import (
    DeliveryError,
    ExtensionService,
    FailureCause,
    Participant,
    PaymentConsumed,
    PaymentFailed,
)
from extension_fsm.adapters.memory import MemoryStore
from extension_fsm.model import PaymentStatus, TimeoutAction
from extension_fsm.simulator import World
from tests.unit._support import new_world


async def _request(world: World) -> str:
    ext = await world.service.request_extension(
        session_id="s1",
        customer_id="c1",
        duration_minutes=30,
        price=15000,
        extension_payment_session_id="p1",
    )
    await world.settle()
    return ext.id


async def _answer(world: World, ext_id: str, accepted: bool) -> None:
    await world.service.respond_to_extension(
        extension_id=ext_id, session_id="s1", mitra_id="m1", accepted=accepted
    )
    await world.settle()


async def test_an_accept_tells_the_host_the_payment_was_consumed() -> None:
    world, _ = await new_world()
    ext_id = await _request(world)
    assert world.payment_events.events == []  # a request only checks the payment
    await world.clock.advance(3)
    await _answer(world, ext_id, accepted=True)
    (event,) = world.payment_events.events
    assert event == PaymentConsumed(
        session_id="s1",
        extension_id=ext_id,
        payment_session_id="p1",
        customer_id="c1",
        amount=15000,
        duration_minutes=30,
        via_timeout=False,
        at=world.clock.now(),
    )
    assert event.dedupe_key == f"{ext_id}:payment_consumed:p1"


async def test_a_reject_tells_the_host_the_payment_failed_as_rejected() -> None:
    world, _ = await new_world()
    ext_id = await _request(world)
    await _answer(world, ext_id, accepted=False)
    (event,) = world.payment_events.events
    assert isinstance(event, PaymentFailed)
    assert (event.session_id, event.extension_id, event.payment_session_id) == ("s1", ext_id, "p1")
    assert event.customer_id == "c1"
    assert (event.amount, event.cause) == (15000, FailureCause.EXTENSION_REJECTED)
    assert event.dedupe_key == f"{ext_id}:payment_failed:p1"


@pytest.mark.parametrize(
    ("action", "reachable", "expected"),
    [
        (TimeoutAction.AUTO_APPROVE, True, "consumed"),
        (TimeoutAction.AUTO_APPROVE, False, FailureCause.EXTENSION_SAFEGUARD_TRIPPED),
        (TimeoutAction.AUTO_REJECT, True, FailureCause.EXTENSION_REJECTED),
    ],
)
async def test_a_timeout_tells_the_host_what_it_did_with_the_payment(
    action: TimeoutAction, reachable: bool, expected: object
) -> None:
    world, session = await new_world()
    world.config.timeout_action = action
    world.connect(session, Participant.MITRA, connected=reachable, online=reachable)
    ext_id = await _request(world)
    await world.clock.advance(world.config.timeout_seconds)  # the in-process timer fires
    (event,) = world.payment_events.events
    assert event.extension_id == ext_id
    if expected == "consumed":
        assert isinstance(event, PaymentConsumed) and event.via_timeout
    else:
        assert isinstance(event, PaymentFailed) and event.cause is expected


async def test_ending_the_session_tells_the_host_the_payment_failed_as_ended() -> None:
    world, _ = await new_world()
    ext_id = await _request(world)
    await world.service.end_session("s1")
    await world.settle()
    (event,) = world.payment_events.events
    assert isinstance(event, PaymentFailed)
    assert (event.extension_id, event.cause) == (ext_id, FailureCause.SESSION_ENDED)


async def test_a_failing_host_never_undoes_the_charge_and_is_told_again() -> None:
    world, _ = await new_world()
    world.payment_events.failures.append(DeliveryError("ledger down", retryable=True))
    ext_id = await _request(world)
    await _answer(world, ext_id, accepted=True)  # returns: the decision is committed
    dump = await world.store.dump()
    assert dump.payments[0].status is PaymentStatus.CONSUMED and len(dump.ledger) == 1
    assert world.payment_events.events == []
    (row,) = [m for m, delivered in dump.outbox if m.kind == "payment" and not delivered]
    assert row.lane == "s1:payment"
    assert (await world.service.dispatcher.dispatch_due()).delivered == 0  # backing off
    await world.clock.advance(1)
    assert (await world.service.dispatcher.dispatch_due()).delivered == 1
    (event,) = world.payment_events.events
    assert isinstance(event, PaymentConsumed) and event.extension_id == ext_id
    assert all(delivered for _, delivered in (await world.store.dump()).outbox)


async def test_a_host_without_a_payment_port_keeps_working() -> None:
    """``payment_events`` is optional: the default only logs, and the rows are
    delivered (nothing piles up in the outbox)."""
    world, _ = await new_world()
    store = world.store
    assert isinstance(store, MemoryStore)
    service = ExtensionService(
        store,
        clock=world.clock,
        config=world.config,
        sockets=world.sockets,
        presence=world.presence,
        push=world.push,
        session_timer=world.session_timer,
    )
    ext = await service.request_extension(
        session_id="s1",
        customer_id="c1",
        duration_minutes=30,
        price=15000,
        extension_payment_session_id="p1",
    )
    await service.respond_to_extension(
        extension_id=ext.id, session_id="s1", mitra_id="m1", accepted=False
    )
    await service.dispatcher.drain()
    dump = await store.dump()
    kinds = [m.kind for m, delivered in dump.outbox if delivered]
    assert "payment" in kinds and all(delivered for _, delivered in dump.outbox)
    assert world.payment_events.events == []  # the world's recorder was not this service's


def test_payment_events_survive_the_round_trip_through_a_row() -> None:
    from datetime import UTC, datetime

    from extension_fsm.outbox import decode_effect, encode_effects

    at = datetime(2026, 1, 1, tzinfo=UTC)
    events = [
        PaymentConsumed("s1", "e1", "p1", "c1", 15000, 30, True, at),
        PaymentFailed("s1", "e2", "p2", "c1", 15000, FailureCause.EXTENSION_SAFEGUARD_TRIPPED, at),
    ]
    ids = iter(["r1", "r2"])
    rows = encode_effects(events, at, lambda: next(ids))
    assert [decode_effect(r) for r in rows] == events
    assert [(r.kind, r.lane, r.dedupe_key) for r in rows] == [
        ("payment", "s1:payment", "e1:payment_consumed:p1"),
        ("payment", "s1:payment", "e2:payment_failed:p2"),
    ]
