"""A timeout that finds its session ``ended``: the extension is cancelled as
"session ended", exactly as ``end_session`` would have, whatever the timeout
action and whether or not its deadline has passed (ended is final: there is
nothing to wait for and nothing to charge).

The host may end a session without ``end_session`` (its own write); the
timeout must then tell the customer and the audit log *why*: the session
ended, not "the mitra did not answer".  A timeout that fell through to the
host-moved path would also be uncharged, so only the cause, reason, event and
message tell the two apart: these tests pin them.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from extension_fsm import (
    Extension,
    ExtensionStatus,
    Facts,
    FailureCause,
    Participant,
    PaymentStatus,
    SessionStatus,
    Snapshot,
    TimeoutAction,
    decide,
)
from extension_fsm.core import Change
from extension_fsm.model import Notify, PaymentFailed, TimeoutExtension, TransitionRecord
from extension_fsm.simulator import make_payment, make_session
from tests.unit._support import new_world, socket_messages

T0 = datetime(2026, 1, 1, tzinfo=UTC)
ENDED = make_session(status=SessionStatus.ENDED, expires_at=T0 + timedelta(minutes=5))
PAYMENT = make_payment(amount=15000)
PENDING = Extension(
    id="e1",
    session_id="s1",
    duration_minutes=30,
    price=15000,
    payment_session_id="p1",
    status=ExtensionStatus.PENDING,
    requested_at=T0,
    expires_at=T0 + timedelta(seconds=10),
    timeout_seconds=10,
)
CAUSE = str(FailureCause.SESSION_ENDED)


@pytest.mark.parametrize("action", list(TimeoutAction))
@pytest.mark.parametrize("after", [5, 10, 3600], ids=["before-deadline", "at-deadline", "late"])
def test_time_out_under_an_ended_session_cancels_it_as_session_ended(
    action: TimeoutAction, after: int
) -> None:
    now = T0 + timedelta(seconds=after)
    snapshot = Snapshot(session=ENDED, extension=PENDING, payment=PAYMENT)
    facts = Facts(now=now, timeout_action=action, mitra_connected=True, mitra_online=True)
    decision = decide(snapshot, TimeoutExtension("e1"), facts)

    assert decision.extension is not None and decision.extension.expected == "pending"
    assert decision.extension.row == replace(
        PENDING,
        status=ExtensionStatus.REJECTED,
        responded_at=now,
        via_timeout=False,
        reason=None,
        failure_cause=FailureCause.SESSION_ENDED,
    )
    assert decision.payment is not None and decision.payment.expected == "confirmed"
    assert decision.payment.row == replace(
        PAYMENT, status=PaymentStatus.FAILED, failure_cause=FailureCause.SESSION_ENDED
    )
    assert decision.session is None  # ended stays ended, untouched
    assert decision.ledger is None  # never charged
    assert decision.log == (
        TransitionRecord("extension", "e1", "pending", "rejected", "cancel", "system", now, CAUSE),
        TransitionRecord("payment", "p1", "confirmed", "failed", "fail", "system", now, CAUSE),
    )
    effect, event = decision.effects
    assert isinstance(effect, Notify)
    assert isinstance(event, PaymentFailed) and event.cause is FailureCause.SESSION_ENDED
    assert (effect.recipient, effect.user_id) == (Participant.CUSTOMER, "c1")
    assert effect.message["reason"] == "session_ended"
    assert (effect.message["accepted"], effect.message["via_timeout"]) == (False, False)
    assert (decision.timer, decision.resolved) == (None, "e1")


async def test_a_sweep_after_the_host_ended_the_session_records_session_ended() -> None:
    """Through the service: the host ends the session by its own write while a
    request is pending; the sweep cancels it with the session-ended cause in
    the rows, the audit log and the customer's message."""
    world, session = await new_world(use_timers=False)
    world.connect(session, Participant.MITRA, connected=True, online=True)  # would approve
    ext = await world.service.request_extension(
        session_id="s1",
        customer_id="c1",
        duration_minutes=30,
        price=15000,
        extension_payment_session_id="p1",
    )
    async with world.store.unit_of_work() as uow:  # the host's own write, not end_session
        paused = (await uow.snapshots.for_end("s1")).session
        assert paused is not None and paused.status is SessionStatus.EXTENDING
        ended = Change("extending", replace(paused, status=SessionStatus.ENDED))
        await uow.write_batch(None, ended, None, None, [], [])
        await uow.commit()
    await world.clock.advance(ext.timeout_seconds + 1)
    (swept,) = await world.service.sweep_due()

    assert (swept.status, swept.failure_cause, swept.reason, swept.via_timeout) == (
        ExtensionStatus.REJECTED,
        FailureCause.SESSION_ENDED,
        None,
        False,
    )
    dump = await world.store.dump()
    assert [(s.status, s.id) for s in dump.sessions] == [(SessionStatus.ENDED, "s1")]
    assert [(p.status, p.failure_cause) for p in dump.payments] == [
        (PaymentStatus.FAILED, FailureCause.SESSION_ENDED)
    ]
    assert dump.ledger == []
    resolution = [
        (r.entity, r.from_status, r.to_status, r.event, r.actor, r.cause)
        for r in dump.log
        if r.from_status == "pending" or r.entity == "payment"
    ]
    assert resolution == [
        ("extension", "pending", "rejected", "cancel", "system", CAUSE),
        ("payment", "confirmed", "failed", "fail", "system", CAUSE),
    ]
    await world.settle()  # deliveries run in the background
    (response,) = socket_messages(world, Participant.CUSTOMER, "extension_response")
    assert (response["accepted"], response["via_timeout"], response["reason"]) == (
        False,
        False,
        "session_ended",
    )
