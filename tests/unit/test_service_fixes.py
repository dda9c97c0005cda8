"""The fixes of ``docs/design.md`` ("What it fixes") that need no database,
one test (or a few) each."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from extension_fsm import (
    DeliveryError,
    DispatchReport,
    ExtensionError,
    ExtensionStatus,
    FailureCause,
    Participant,
    PaymentStatus,
    SessionStatus,
)
from extension_fsm.adapters.memory import MemoryStore
from extension_fsm.machine import SESSION_MACHINE, Guard, InvalidMove
from extension_fsm.simulator import World, make_payment, make_session
from extension_fsm.testing.samples import add_committed
from tests.unit._support import assert_refused, new_world, socket_messages

C, M = Participant.CUSTOMER, Participant.MITRA


async def _request(world: World, session_id: str = "s1", payment_id: str = "p1") -> str:
    ext = await world.service.request_extension(
        session_id=session_id,
        customer_id="c1",
        duration_minutes=30,
        price=15000,
        extension_payment_session_id=payment_id,
    )
    await world.settle()  # its deliveries run in the background
    return ext.id


# ----------------------------------------- a payment backs one live extension


async def test_a_payment_session_backing_a_pending_extension_is_in_use() -> None:
    world, _ = await new_world()
    await world.add_session(make_session("s2", expires_at=world.clock.now() + timedelta(hours=1)))
    await _request(world, "s1", "p1")
    await assert_refused(
        world,
        lambda: world.service.request_extension(
            session_id="s2",
            customer_id="c1",
            duration_minutes=30,
            price=15000,
            extension_payment_session_id="p1",
        ),
        "PAYMENT_IN_USE",
        409,
    )


async def test_the_store_itself_refuses_a_second_live_extension_per_payment() -> None:
    world, _ = await new_world()
    await world.add_session(make_session("s2", expires_at=world.clock.now() + timedelta(hours=1)))
    first = await _request(world, "s1", "p1")
    store = world.store
    assert isinstance(store, MemoryStore)
    twin = replace(store.extensions[first], id="x", session_id="s2")
    await world.settle()
    before = await store.dump()
    with pytest.raises(ExtensionError) as info:
        await add_committed(store, twin)
    assert info.value.code.value == "PAYMENT_IN_USE"
    assert await store.dump() == before


async def test_the_store_itself_refuses_a_second_pending_extension_per_session() -> None:
    world, _ = await new_world()
    first = await _request(world, "s1", "p1")
    await world.add_payment(make_payment("p2"))
    store = world.store
    assert isinstance(store, MemoryStore)
    row = store.extensions[first]
    await world.settle()
    before = await store.dump()
    with pytest.raises(ExtensionError) as info:
        await add_committed(store, replace(row, id="x", payment_session_id="p2"))
    assert info.value.code.value == "EXTENSION_PENDING"
    assert await store.dump() == before


async def test_a_failed_payment_is_not_live_but_cannot_be_reused_either() -> None:
    world, _ = await new_world()
    ext_id = await _request(world)
    await world.service.respond_to_extension(
        extension_id=ext_id, session_id="s1", mitra_id="m1", accepted=False
    )
    await world.settle()
    # p1 is failed now; a new request with it is refused on its status
    await assert_refused(world, lambda: _request(world, "s1", "p1"), "INVALID_STATE", 409)


# ------------------------------------------------------------ ended is final


async def test_ending_is_final_and_idempotent() -> None:
    world, _ = await new_world()
    ended = await world.service.end_session("s1")
    assert ended.status is SessionStatus.ENDED
    await world.settle()
    before = await world.store.dump()
    again = await world.service.end_session("s1")
    assert again == ended
    assert await world.store.dump() == before
    await assert_refused(world, lambda: _request(world), "SESSION_NOT_ACTIVE", 409)
    with pytest.raises(InvalidMove):
        SESSION_MACHINE.fire(SessionStatus.ENDED, "pause", Guard(now=world.clock.now()))
    await world.clock.advance(3600)  # expiry and grace timers must not touch it
    session = await world.session("s1")
    assert session is not None and session.status is SessionStatus.ENDED


async def test_ending_resolves_a_pending_extension_as_rejected_and_fails_its_payment() -> None:
    world, session = await new_world()
    world.connect(session, M, connected=True, online=True)  # would have auto-approved
    ext_id = await _request(world)
    await world.clock.advance(3)
    await world.service.end_session("s1")
    await world.settle()
    dump = await world.store.dump()
    (ext,) = dump.extensions
    assert (ext.status, ext.failure_cause) == (ExtensionStatus.REJECTED, FailureCause.SESSION_ENDED)
    assert (dump.payments[0].status, dump.payments[0].failure_cause) == (
        PaymentStatus.FAILED,
        FailureCause.SESSION_ENDED,
    )
    assert dump.sessions[0].status is SessionStatus.ENDED
    assert dump.ledger == []
    (response,) = socket_messages(world, C, "extension_response")
    assert response == {
        "type": "extension_response",
        "accepted": False,
        "via_timeout": False,
        "reason": "session_ended",
        "dedupe_key": f"{ext_id}:extension_response:customer",
    }
    await world.clock.advance(60)  # the deadline timer was dropped; nothing moves
    assert await world.store.dump() == dump
    await assert_refused(
        world,
        lambda: world.service.respond_to_extension(
            extension_id=ext_id, session_id="s1", mitra_id="m1", accepted=True
        ),
        "EXTENSION_RESOLVED",
        409,
    )


# ------------------------------------------------- customer push fallback


@pytest.mark.parametrize(
    ("accepted", "title"), [(True, "Perpanjangan Diterima"), (False, "Perpanjangan Ditolak")]
)
async def test_a_customer_off_the_session_socket_gets_the_response_by_push(
    accepted: bool, title: str
) -> None:
    world, _ = await new_world(customer_on_socket=False)
    ext_id = await _request(world)
    await world.service.respond_to_extension(
        extension_id=ext_id, session_id="s1", mitra_id="m1", accepted=accepted
    )
    await world.settle()
    (push,) = [p for p in world.push.sent if p.participant is C]
    assert push.user_id == "c1"
    assert push.payload["title"] == title
    assert push.payload["data"] == {
        "type": "extension_response",
        "session_id": "s1",
        "extension_id": ext_id,
        "accepted": accepted,
        "action": "open_chat",
    }


async def test_a_customer_off_the_socket_hears_about_a_timeout_by_push() -> None:
    world, _ = await new_world(customer_on_socket=False)
    await _request(world)
    await world.clock.advance(10)
    (push,) = [p for p in world.push.sent if p.participant is C]
    assert push.payload["title"] == "Perpanjangan Tidak Dijawab"
    data = push.payload["data"]
    assert isinstance(data, dict) and data["accepted"] is False


async def test_a_customer_on_the_session_socket_gets_no_push() -> None:
    world, _ = await new_world(customer_on_socket=True)
    ext_id = await _request(world)
    await world.service.respond_to_extension(
        extension_id=ext_id, session_id="s1", mitra_id="m1", accepted=True
    )
    await world.settle()
    assert [p for p in world.push.sent if p.participant is C] == []


# ------------------------------------------------ restart: deadlines are data


async def test_a_restart_loses_timers_but_sweep_due_resolves() -> None:
    world, _ = await new_world()  # timers on, no periodic sweep
    ext_id = await _request(world)
    assert world.clock.pending_timers >= 1
    await world.restart()
    await world.clock.advance(60)
    assert (await world.store.dump()).extensions[0].status is ExtensionStatus.PENDING
    resolved = await world.service.sweep_due()
    assert [e.id for e in resolved] == [ext_id]
    assert resolved[0].status is ExtensionStatus.TIMEOUT
    assert await world.service.sweep_due() == []  # nothing left; safe to call again


async def test_with_the_periodic_sweep_a_restart_delays_by_at_most_one_interval() -> None:
    world, _ = await new_world(sweep_interval=1.0)
    await _request(world)
    await world.clock.advance(4.5)
    await world.restart()
    await world.clock.advance(5.5)  # the deadline, t=10
    await world.clock.advance(1.0)
    ext = (await world.store.dump()).extensions[0]
    assert ext.status is ExtensionStatus.TIMEOUT
    assert ext.expires_at <= ext.responded_at <= ext.expires_at + timedelta(seconds=1)  # type: ignore[operator]


async def test_sweep_due_only_takes_what_is_due() -> None:
    world, _ = await new_world(use_timers=False)
    await _request(world)
    await world.clock.advance(9.999)
    assert await world.service.sweep_due() == []
    await world.clock.advance(0.001)
    assert len(await world.service.sweep_due()) == 1


# ------------------------------------------------- outbox: push failures


async def test_a_retryable_push_failure_keeps_the_state_and_is_retried_later() -> None:
    world, _ = await new_world(mitra_on_socket=False)
    world.push.failures.append(DeliveryError("quota", retryable=True))
    ext_id = await _request(world)  # the call itself succeeds
    dump = await world.store.dump()
    assert dump.extensions[0].status is ExtensionStatus.PENDING
    assert dump.sessions[0].status is SessionStatus.EXTENDING
    undelivered = [m.dedupe_key for m, ok in dump.outbox if not ok]
    assert undelivered == [f"{ext_id}:extension_request:mitra"]
    assert world.push.sent == []
    report = await world.service.dispatcher.dispatch_due()
    assert report.delivered == 0  # backing off
    await world.clock.advance(1)
    report = await world.service.dispatcher.dispatch_due()
    assert (report.delivered, report.retried, report.dead) == (1, 0, 0)
    (push,) = world.push.sent
    assert push.payload["title"] == "Permintaan Perpanjang"
    assert all(ok for _, ok in (await world.store.dump()).outbox)
    await world.clock.advance(100)
    assert (await world.service.dispatcher.dispatch_due()).delivered == 0  # at most once here


async def test_a_final_push_failure_marks_the_row_dead_and_is_never_retried() -> None:
    world, _ = await new_world(mitra_on_socket=False, use_timers=False)
    world.push.failures.append(DeliveryError("unregistered", retryable=False))
    await _request(world)
    assert (await world.store.dump()).sessions[0].status is SessionStatus.EXTENDING
    assert isinstance(world.store, MemoryStore)
    dead = [r for r in world.store.outbox_rows.values() if r.dead]
    assert len(dead) == 1 and dead[0].last_error == "unregistered"
    await world.clock.advance(3600)
    assert await world.service.dispatcher.dispatch_due() == DispatchReport()
    assert world.push.sent == []


async def test_a_push_failure_on_the_resolution_never_rolls_it_back() -> None:
    world, _ = await new_world(customer_on_socket=False)
    ext_id = await _request(world)
    world.push.failures.append(DeliveryError("unavailable", retryable=True))
    await world.service.respond_to_extension(
        extension_id=ext_id, session_id="s1", mitra_id="m1", accepted=True
    )
    await world.settle()
    dump = await world.store.dump()
    assert dump.extensions[0].status is ExtensionStatus.ACCEPTED
    assert dump.payments[0].status is PaymentStatus.CONSUMED
    assert len(dump.ledger) == 1
    await world.clock.advance(2)
    await world.service.dispatcher.dispatch_due()
    assert [p.payload["title"] for p in world.push.sent] == ["Perpanjangan Diterima"]


async def test_timeout_with_a_payment_no_longer_confirmed_resolves_without_charge() -> None:
    """Liveness over drift: the host failed the payment behind a pending extension;
    auto-approve must not charge it, and the extension must not stay pending."""
    world, session = await new_world()
    world.connect(session, Participant.MITRA, connected=True, online=True)
    ext = await world.service.request_extension(
        session_id="s1",
        customer_id="c1",
        duration_minutes=15,
        price=15000,
        extension_payment_session_id="p1",
    )
    store = world.store
    assert isinstance(store, MemoryStore)
    store.add_payment(replace(store.payments["p1"], status=PaymentStatus.FAILED))
    await world.clock.advance(11)
    assert await world.service.sweep_due() == []  # the timer already did it
    row = store.extensions[ext.id]
    assert row.status is ExtensionStatus.TIMEOUT
    assert row.failure_cause is FailureCause.EXTENSION_SAFEGUARD_TRIPPED
    assert store.ledger == []
    assert store.sessions["s1"].status is SessionStatus.CLOSING
