"""The audit log of every decision, record by record: what moved, from where
to where, by which event, by whom, when and why.  Plus which timer each
decision arms or drops.

The log is how an operator reconstructs a dispute ("who approved this?"), so
a wrong actor or event is a real defect even when the rows end up right;
other tests check the rows, these pin the records.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from extension_fsm import (
    Extension,
    ExtensionStatus,
    Facts,
    PaymentStatus,
    SessionStatus,
    Snapshot,
    TimeoutAction,
    decide,
)
from extension_fsm.model import (
    EndSession,
    Event,
    FailureCause,
    Notify,
    Participant,
    PaymentFailed,
    RequestExtension,
    RespondToExtension,
    TimeoutExtension,
)
from extension_fsm.simulator import make_payment, make_session

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SESSION = make_session(expires_at=T0 + timedelta(minutes=5))
EXTENDING = replace(SESSION, status=SessionStatus.EXTENDING)
PAYMENT = make_payment(amount=15000)
EXT = Extension(
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
ANSWERING = Snapshot(session=EXTENDING, extension=EXT, payment=PAYMENT)
AT_3 = T0 + timedelta(seconds=3)
DUE = T0 + timedelta(seconds=10)

Row = tuple[str, str, str | None, str, str, str, datetime, str | None]

CASES: dict[str, tuple[Snapshot, Event, Facts, list[Row], str | None]] = {
    "request": (
        Snapshot(session=SESSION, payment=PAYMENT),
        RequestExtension("s1", "c1", 30, 15000, "p1"),
        Facts(now=T0, timeout_seconds=10, new_extension_id="e1"),
        [
            ("extension", "e1", None, "pending", "request", "customer", T0, None),
            ("session", "s1", "active", "extending", "pause", "customer", T0, None),
        ],
        None,
    ),
    "accept": (
        ANSWERING,
        RespondToExtension("e1", "s1", "m1", True),
        Facts(now=AT_3),
        [
            ("extension", "e1", "pending", "accepted", "accept", "mitra", AT_3, None),
            ("session", "s1", "extending", "active", "resume", "mitra", AT_3, None),
            ("payment", "p1", "confirmed", "consumed", "consume", "mitra", AT_3, None),
        ],
        "e1",
    ),
    "reject": (
        ANSWERING,
        RespondToExtension("e1", "s1", "m1", False),
        Facts(now=AT_3, grace_seconds=60),
        [
            (
                "extension",
                "e1",
                "pending",
                "rejected",
                "reject",
                "mitra",
                AT_3,
                "extension_rejected",
            ),
            ("session", "s1", "extending", "closing", "close", "mitra", AT_3, None),
            ("payment", "p1", "confirmed", "failed", "fail", "mitra", AT_3, "extension_rejected"),
        ],
        "e1",
    ),
    "timeout-approves": (
        ANSWERING,
        TimeoutExtension("e1"),
        Facts(
            now=DUE,
            timeout_action=TimeoutAction.AUTO_APPROVE,
            mitra_connected=True,
            mitra_online=True,
        ),
        [
            ("extension", "e1", "pending", "accepted", "time_out", "system", DUE, None),
            ("session", "s1", "extending", "active", "resume", "system", DUE, None),
            ("payment", "p1", "confirmed", "consumed", "consume", "system", DUE, None),
        ],
        "e1",
    ),
    "timeout-rejects": (
        ANSWERING,
        TimeoutExtension("e1"),
        Facts(now=DUE, timeout_action=TimeoutAction.AUTO_REJECT),
        [
            (
                "extension",
                "e1",
                "pending",
                "timeout",
                "time_out",
                "system",
                DUE,
                "extension_rejected",
            ),
            ("session", "s1", "extending", "closing", "close", "system", DUE, None),
            ("payment", "p1", "confirmed", "failed", "fail", "system", DUE, "extension_rejected"),
        ],
        "e1",
    ),
    "end-with-a-pending-request": (
        Snapshot(session=EXTENDING, pending=EXT, payment=PAYMENT),
        EndSession("s1"),
        Facts(now=AT_3),
        [
            ("extension", "e1", "pending", "rejected", "cancel", "host", AT_3, "session_ended"),
            ("payment", "p1", "confirmed", "failed", "fail", "host", AT_3, "session_ended"),
            ("session", "s1", "extending", "ended", "end", "host", AT_3, None),
        ],
        "e1",
    ),
    "end": (
        Snapshot(session=SESSION),
        EndSession("s1"),
        Facts(now=AT_3),
        [("session", "s1", "active", "ended", "end", "host", AT_3, None)],
        None,
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_decision_logs_exactly_these_records(case: str) -> None:
    snapshot, event, facts, records, resolved = CASES[case]
    decision = decide(snapshot, event, facts)
    logged = [
        (r.entity, r.entity_id, r.from_status, r.to_status, r.event, r.actor, r.at, r.cause)
        for r in decision.log
    ]
    assert logged == records
    assert decision.resolved == resolved  # the in-process timer the shell may drop
    if case == "request":
        assert decision.timer == ("e1", T0 + timedelta(seconds=10))
    else:
        assert decision.timer is None  # nothing else arms a timer


def test_ending_with_a_pending_request_tells_the_customer_once_and_charges_nothing() -> None:
    snapshot = Snapshot(session=EXTENDING, pending=EXT, payment=PAYMENT)
    decision = decide(snapshot, EndSession("s1"), Facts(now=AT_3))
    assert decision.ledger is None
    (notice,) = [e for e in decision.effects if isinstance(e, Notify)]
    assert notice.recipient is Participant.CUSTOMER
    assert (notice.message["accepted"], notice.message["reason"]) == (False, "session_ended")
    (failed,) = [e for e in decision.effects if not isinstance(e, Notify)]
    assert isinstance(failed, PaymentFailed)  # the host's money side: a failure, no charge
    assert (failed.payment_session_id, failed.cause) == (PAYMENT.id, FailureCause.SESSION_ENDED)


def test_ending_never_fails_a_payment_that_does_not_back_the_pending_request() -> None:
    """Only the pending request's own payment is failed; another payment in the
    snapshot (a host's adapter may load one) is left as it is."""
    other = make_payment("p2", amount=15000)
    snapshot = Snapshot(session=EXTENDING, pending=EXT, payment=other)
    decision = decide(snapshot, EndSession("s1"), Facts(now=AT_3))
    assert decision.payment is None
    assert [r.entity for r in decision.log] == ["extension", "session"]
    assert decision.extension is not None
    assert decision.extension.row.status is ExtensionStatus.REJECTED


def test_ending_a_request_whose_payment_is_already_settled_leaves_the_payment() -> None:
    settled = replace(PAYMENT, status=PaymentStatus.FAILED)
    snapshot = Snapshot(session=EXTENDING, pending=EXT, payment=settled)
    decision = decide(snapshot, EndSession("s1"), Facts(now=AT_3))
    assert decision.payment is None
    assert [r.entity for r in decision.log] == ["extension", "session"]


def test_a_timeout_whose_session_row_is_gone_ends_it_uncharged_and_tells_the_host() -> None:
    """A pending extension without its session (the host deleted the row) times
    out uncharged instead of staying pending for ever: never approved, even with
    the mitra reachable; nobody to message, but the payment is failed and the
    host's money side hears of it."""
    orphan = Snapshot(session=None, extension=EXT, payment=PAYMENT)
    facts = Facts(now=DUE, mitra_connected=True, mitra_online=True)
    decision = decide(orphan, TimeoutExtension("e1"), facts)
    assert decision.extension is not None
    assert decision.extension.row.status is ExtensionStatus.TIMEOUT
    assert decision.session is None and decision.ledger is None
    assert decision.payment is not None
    assert decision.payment.row.status is PaymentStatus.FAILED
    (event,) = decision.effects
    assert isinstance(event, PaymentFailed) and event.payment_session_id == PAYMENT.id
