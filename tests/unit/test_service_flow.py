"""The flow of ``docs/design.md`` ("The flow it keeps"), one test per row,
through ``ExtensionService`` on the memory store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from extension_fsm import (
    Extension,
    ExtensionStatus,
    FailureCause,
    Participant,
    PaymentSession,
    PaymentStatus,
    Session,
    SessionStatus,
    TimeoutReason,
    TransactionType,
)
from extension_fsm.simulator import World
from tests.unit._support import new_world, socket_messages

C, M = Participant.CUSTOMER, Participant.MITRA


async def _request(world: World, duration: int = 30, price: int = 15000) -> str:
    ext = await world.service.request_extension(
        session_id="s1",
        customer_id="c1",
        duration_minutes=duration,
        price=price,
        extension_payment_session_id="p1",
    )
    await world.settle()  # its deliveries run in the background
    return ext.id


async def _rows(world: World) -> tuple[Extension, Session, PaymentSession]:
    dump = await world.store.dump()
    return dump.extensions[0], dump.sessions[0], dump.payments[0]


# --------------------------------------------------------------- request


async def test_request_writes_a_pending_row_and_pauses_the_session() -> None:
    world, session = await new_world()
    world.config.timeout_seconds = 25
    start = world.clock.now()
    ext_id = await _request(world)
    dump = await world.store.dump()
    (ext,) = dump.extensions
    assert (ext.id, ext.status, ext.session_id, ext.payment_session_id) == (
        ext_id,
        ExtensionStatus.PENDING,
        "s1",
        "p1",
    )
    assert (ext.duration_minutes, ext.price, ext.timeout_seconds) == (30, 15000, 25)
    assert ext.requested_at == start and ext.expires_at == start + timedelta(seconds=25)
    assert dump.sessions[0].status is SessionStatus.EXTENDING
    assert dump.payments[0].status is PaymentStatus.CONFIRMED  # only checked, not charged
    assert dump.ledger == []
    assert session.status is SessionStatus.ACTIVE


async def test_mitra_on_the_session_socket_gets_the_request_there_and_no_push() -> None:
    world, _ = await new_world(mitra_on_socket=True)
    world.config.timeout_seconds = 25
    ext_id = await _request(world)
    assert socket_messages(world, M, "extension_request") == [
        {
            "type": "extension_request",
            "extension_id": ext_id,
            "session_id": "s1",
            "duration_minutes": 30,
            "price": 15000,
            "topic_sensitivity": None,
            "timeout_seconds": 25,
            "dedupe_key": f"{ext_id}:extension_request:mitra",
        }
    ]
    assert world.push.sent == []


async def test_mitra_off_the_session_socket_gets_the_seed_push() -> None:
    world, _ = await new_world(mitra_on_socket=False)
    world.config.timeout_seconds = 25
    ext_id = await _request(world, duration=45, price=15000)
    (tried,) = [d for d in world.sockets.sent if d.participant is M]
    assert not tried.taken
    (push,) = world.push.sent
    assert (push.participant, push.user_id) == (M, "m1")
    assert push.payload == {
        "title": "Permintaan Perpanjang",
        "body": "Rina mau lanjut +45 menit",
        "data": {
            "type": "extension_request",
            "session_id": "s1",
            "extension_id": ext_id,
            "duration_minutes": 45,
            "price": 15000,
            "timeout_seconds": 25,
            "action": "open_extension",
        },
    }


async def test_customer_is_told_the_session_is_paused() -> None:
    world, _ = await new_world()
    ext_id = await _request(world)
    assert socket_messages(world, C, "session_paused") == [
        {
            "type": "session_paused",
            "session_id": "s1",
            "reason": "extension_pending",
            "dedupe_key": f"{ext_id}:session_paused:customer",
        }
    ]


# ---------------------------------------------------------------- accept


async def test_accept_charges_extends_resumes_and_tells_both() -> None:
    world, session = await new_world()
    ext_id = await _request(world)
    await world.clock.advance(3)
    returned = await world.service.respond_to_extension(
        extension_id=ext_id, session_id="s1", mitra_id="m1", accepted=True
    )
    await world.settle()
    ext, ses, pay = await _rows(world)
    new_expiry = session.expires_at + timedelta(minutes=30)
    assert returned == ext
    assert ext.status is ExtensionStatus.ACCEPTED and not ext.via_timeout
    assert ses.status is SessionStatus.ACTIVE and ses.expires_at == new_expiry
    assert pay.status is PaymentStatus.CONSUMED
    (entry,) = (await world.store.dump()).ledger
    assert (entry.customer_id, entry.session_id, entry.extension_id, entry.type, entry.amount) == (
        "c1",
        "s1",
        ext_id,
        TransactionType.EXTENSION,
        15000,
    )
    assert entry.created_at == world.clock.now()
    assert ("clear_closure_grace", "s1", None) in world.session_timer.calls
    assert ("expiry_extended", "s1", new_expiry) in world.session_timer.calls
    assert socket_messages(world, C, "extension_response") == [
        {
            "type": "extension_response",
            "accepted": True,
            "duration_minutes": 30,
            "expires_at": new_expiry.strftime("%Y-%m-%dT%H:%M:%S.000Z"),  # Date.toJSON()
            "via_timeout": False,
            "dedupe_key": f"{ext_id}:extension_response:customer",
        }
    ]
    for who in (C, M):
        assert socket_messages(world, who, "session_resumed") == [
            {
                "type": "session_resumed",
                "session_id": "s1",
                "dedupe_key": f"{ext_id}:session_resumed:{who.value}",
            }
        ]
    assert world.push.sent == []  # everyone was on the socket


async def test_accept_of_a_session_that_expired_while_extending_extends_from_now() -> None:
    world, session = await new_world(expires_in=timedelta(seconds=5))
    world.config.timeout_seconds = 60
    ext_id = await _request(world)
    await world.clock.advance(20)  # past the session's expiry: paused, not closed
    paused = await world.session("s1")
    assert paused is not None and paused.status is SessionStatus.EXTENDING
    await world.service.respond_to_extension(
        extension_id=ext_id, session_id="s1", mitra_id="m1", accepted=True
    )
    await world.settle()
    ses = await world.session("s1")
    assert ses is not None and ses.status is SessionStatus.ACTIVE
    assert ses.expires_at == world.clock.now() + timedelta(minutes=30)
    assert ses.expires_at > session.expires_at + timedelta(minutes=30)


async def test_accept_from_closing_clears_the_running_grace_timer() -> None:
    world, _ = await new_world(expires_in=timedelta(seconds=1))
    world.config.grace_seconds = 60
    await world.clock.advance(2)  # expiry: closing, grace running until t=62
    closing = await world.session("s1")
    assert closing is not None and closing.status is SessionStatus.CLOSING
    assert closing.closure_deadline is not None
    ext_id = await _request(world)
    await world.service.respond_to_extension(
        extension_id=ext_id, session_id="s1", mitra_id="m1", accepted=True
    )
    await world.settle()
    ses = await world.session("s1")
    assert ses is not None and ses.closure_deadline is None
    await world.clock.advance(120)  # the old grace deadline passes: nothing ends
    ses = await world.session("s1")
    assert ses is not None and ses.status is SessionStatus.ACTIVE


# ---------------------------------------------------------------- reject


async def test_reject_fails_the_payment_closes_and_starts_grace() -> None:
    world, _ = await new_world()
    world.config.grace_seconds = 45
    ext_id = await _request(world)
    await world.clock.advance(2)
    await world.service.respond_to_extension(
        extension_id=ext_id, session_id="s1", mitra_id="m1", accepted=False
    )
    await world.settle()
    ext, ses, pay = await _rows(world)
    deadline = world.clock.now() + timedelta(seconds=45)
    assert ext.status is ExtensionStatus.REJECTED
    assert ext.failure_cause is FailureCause.EXTENSION_REJECTED
    assert pay.status is PaymentStatus.FAILED
    assert pay.failure_cause is FailureCause.EXTENSION_REJECTED
    assert ses.status is SessionStatus.CLOSING and ses.closure_deadline == deadline
    assert ("start_closure_grace", "s1", deadline) in world.session_timer.calls
    assert (await world.store.dump()).ledger == []
    assert socket_messages(world, C, "extension_response") == [
        {
            "type": "extension_response",
            "accepted": False,
            "via_timeout": False,
            "dedupe_key": f"{ext_id}:extension_response:customer",
        }
    ]
    for who in (C, M):
        assert socket_messages(world, who, "session_closing") == [
            {
                "type": "session_closing",
                "session_id": "s1",
                "dedupe_key": f"{ext_id}:session_closing:{who.value}",
            }
        ]
    await world.clock.advance(46)  # the host's grace ends the session
    ended = await world.session("s1")
    assert ended is not None and ended.status is SessionStatus.ENDED


# --------------------------------------------------------------- timeout


async def test_timeout_auto_approve_with_the_mitra_reachable_approves() -> None:
    world, session = await new_world()
    world.connect(session, M, connected=True, online=True)
    ext_id = await _request(world)
    await world.clock.advance(10)  # the in-process timer fires at the deadline
    ext, ses, pay = await _rows(world)
    assert ext.status is ExtensionStatus.ACCEPTED and ext.via_timeout
    assert ext.responded_at == ext.expires_at
    assert pay.status is PaymentStatus.CONSUMED
    assert ses.status is SessionStatus.ACTIVE
    (response,) = socket_messages(world, C, "extension_response")
    assert response["accepted"] is True and response["via_timeout"] is True
    assert response["dedupe_key"] == f"{ext_id}:extension_response:customer"
    assert len((await world.store.dump()).ledger) == 1


async def _timed_out(connected: bool, online: bool, action: str) -> World:
    world, session = await new_world()
    world.connect(session, M, connected=connected, online=online)
    world.config.timeout_action = action
    await _request(world)
    await world.clock.advance(10)
    return world


async def _assert_timeout(world: World, cause: FailureCause, reason: TimeoutReason) -> None:
    ext, ses, pay = await _rows(world)
    assert ext.status is ExtensionStatus.TIMEOUT and ext.via_timeout
    assert (ext.failure_cause, ext.reason) == (cause, reason)
    assert (pay.status, pay.failure_cause) == (PaymentStatus.FAILED, cause)
    assert ses.status is SessionStatus.CLOSING
    assert (await world.store.dump()).ledger == []
    (response,) = socket_messages(world, C, "extension_response")
    assert {k: v for k, v in response.items() if k != "dedupe_key"} == {
        "type": "extension_response",
        "accepted": False,
        "reason": reason.value,
    }
    for who in (C, M):
        assert len(socket_messages(world, who, "session_closing")) == 1


async def test_timeout_auto_approve_with_the_mitra_not_connected_trips_the_safeguard() -> None:
    world = await _timed_out(connected=False, online=True, action="auto_approve")
    await _assert_timeout(world, FailureCause.EXTENSION_SAFEGUARD_TRIPPED, TimeoutReason.SAFEGUARD)


async def test_timeout_auto_approve_with_the_mitra_not_online_trips_the_safeguard() -> None:
    world = await _timed_out(connected=True, online=False, action="auto_approve")
    await _assert_timeout(world, FailureCause.EXTENSION_SAFEGUARD_TRIPPED, TimeoutReason.SAFEGUARD)


async def test_timeout_auto_reject_times_out_even_with_the_mitra_reachable() -> None:
    world = await _timed_out(connected=True, online=True, action="auto_reject")
    await _assert_timeout(world, FailureCause.EXTENSION_REJECTED, TimeoutReason.TIMEOUT)


async def test_an_unknown_timeout_action_means_auto_approve() -> None:
    world = await _timed_out(connected=True, online=True, action="bogus")
    ext, _, _ = await _rows(world)
    assert ext.status is ExtensionStatus.ACCEPTED and ext.via_timeout
    world = await _timed_out(connected=False, online=False, action="")
    await _assert_timeout(world, FailureCause.EXTENSION_SAFEGUARD_TRIPPED, TimeoutReason.SAFEGUARD)


async def test_the_policy_is_read_when_the_timeout_fires() -> None:
    world, session = await new_world()
    world.connect(session, M, connected=True, online=True)
    world.config.timeout_action = "auto_approve"
    await _request(world)
    await world.clock.advance(5)
    world.config.timeout_action = "auto_reject"  # changed between request and deadline
    await world.clock.advance(5)
    await _assert_timeout(world, FailureCause.EXTENSION_REJECTED, TimeoutReason.TIMEOUT)


async def test_presence_is_read_when_the_timeout_fires() -> None:
    world, session = await new_world()
    world.connect(session, M, connected=True, online=True)
    await _request(world)
    await world.clock.advance(9)
    world.connect(session, M, online=False)  # went offline just before the deadline
    await world.clock.advance(1)
    await _assert_timeout(world, FailureCause.EXTENSION_SAFEGUARD_TRIPPED, TimeoutReason.SAFEGUARD)


async def test_the_timeout_seconds_are_read_at_request_time() -> None:
    world, _ = await new_world()
    world.config.timeout_seconds = 10
    await _request(world)
    world.config.timeout_seconds = 600  # too late for this request
    await world.clock.advance(9.5)
    ext, _, _ = await _rows(world)
    assert ext.status is ExtensionStatus.PENDING and ext.timeout_seconds == 10
    await world.clock.advance(0.5)
    ext, _, _ = await _rows(world)
    assert ext.status is ExtensionStatus.TIMEOUT


# ------------------------------------------------------------- rehydrate


async def test_pending_extension_rehydrates_the_window_then_says_none() -> None:
    # No timer, no sweep: the row stays pending in storage past its deadline.
    world, _ = await new_world(use_timers=False)
    world.config.timeout_seconds = 20
    start = world.clock.now()
    ext_id = await _request(world, duration=15)
    await world.clock.advance(5)
    info = await world.service.pending_extension("s1")
    assert info is not None
    assert start == datetime(2026, 1, 1, tzinfo=UTC)
    assert (
        info.to_json()
        == info.to_payload()
        == {
            "extension_id": ext_id,
            "duration_minutes": 15,
            "price": 15000,
            "requested_at": "2026-01-01T00:00:00.000Z",  # the seed's Date.toJSON() form
            "expires_at": "2026-01-01T00:00:20.000Z",
            "timeout_seconds": 20,
        }
    )
    await world.clock.advance(15)  # exactly at the deadline: the window has passed
    assert await world.service.pending_extension("s1") is None
    assert (await world.store.dump()).extensions[0].status is ExtensionStatus.PENDING
    assert await world.service.pending_extension("nope") is None


async def test_pending_extension_is_none_once_answered() -> None:
    world, _ = await new_world()
    ext_id = await _request(world)
    await world.service.respond_to_extension(
        extension_id=ext_id, session_id="s1", mitra_id="m1", accepted=False
    )
    await world.settle()
    assert await world.service.pending_extension("s1") is None
