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
    ErrorCode,
    Extension,
    ExtensionError,
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
SESSION = replace(make_session(expires_at=T0 + timedelta(minutes=5)), topic_sensitivity="high")
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
    "timeout-after-the-host-moved-the-session": (
        replace(ANSWERING, session=SESSION),  # active again: not through end_session
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


@pytest.mark.parametrize("case", list(CASES))
def test_each_compare_and_set_expects_the_state_its_record_leaves(case: str) -> None:
    """Every row a decision writes is written "only if still in the state the
    audit record says it left" and ends in the state the record says it
    reached: the log and the compare-and-sets tell one story."""
    snapshot, event, facts, _, _ = CASES[case]
    decision = decide(snapshot, event, facts)
    records = {(r.entity, r.entity_id): r for r in decision.log}
    changes = {"extension": decision.extension, "session": decision.session}
    changes["payment"] = decision.payment
    written = 0
    for entity, change in changes.items():
        if change is None:
            continue
        written += 1
        record = records[(entity, change.row.id)]
        assert (change.expected, str(change.row.status)) == (
            record.from_status,
            record.to_status,
        )
    assert written == len(decision.log)  # one record per row written, no more


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


@pytest.mark.parametrize("case", list(CASES))
def test_a_written_row_changes_only_what_the_move_changes(case: str) -> None:
    """A moved session keeps its parties, name and sensitivity; a settled payment
    keeps its customer, amount and flags: only status, expiry, closure deadline
    (session) and status, failure cause (payment) may change."""
    snapshot, event, facts, _, _ = CASES[case]
    decision = decide(snapshot, event, facts)
    if decision.session is not None:
        before = snapshot.session
        after = decision.session.row
        assert before is not None
        assert after == replace(
            before,
            status=after.status,
            expires_at=after.expires_at,
            closure_deadline=after.closure_deadline,
        )
    if decision.payment is not None:
        paid = decision.payment.row
        assert snapshot.payment is not None
        assert paid == replace(
            snapshot.payment, status=paid.status, failure_cause=paid.failure_cause
        )


def test_a_new_request_is_pending_and_unanswered() -> None:
    snapshot, event, facts, _, _ = CASES["request"]
    decision = decide(snapshot, event, facts)
    assert decision.extension is not None
    assert decision.extension.row == replace(
        EXT, responded_at=None, via_timeout=False, reason=None, failure_cause=None
    )


def test_a_request_from_closing_keeps_the_closure_deadline() -> None:
    deadline = T0 + timedelta(seconds=30)
    closing = replace(SESSION, status=SessionStatus.CLOSING, closure_deadline=deadline)
    decision = decide(
        Snapshot(session=closing, payment=PAYMENT),
        RequestExtension("s1", "c1", 30, 15000, "p1"),
        Facts(now=T0, timeout_seconds=10, new_extension_id="e1"),
    )
    assert decision.session is not None
    assert decision.session.row.closure_deadline == deadline


@pytest.mark.parametrize("status", [PaymentStatus.FAILED, PaymentStatus.CONSUMED])
def test_an_accept_on_a_payment_no_longer_confirmed_is_refused(status: PaymentStatus) -> None:
    moved = replace(ANSWERING, payment=replace(PAYMENT, status=status))
    with pytest.raises(ExtensionError) as refused:
        decide(moved, RespondToExtension("e1", "s1", "m1", True), Facts(now=AT_3))
    assert (refused.value.code, refused.value.status_code) == (ErrorCode.INVALID_STATE, 409)


@pytest.mark.parametrize("accepted", [True, False])
def test_an_answer_after_the_host_ended_the_session_is_refused(accepted: bool) -> None:
    ended = replace(ANSWERING, session=replace(SESSION, status=SessionStatus.ENDED))
    with pytest.raises(ExtensionError) as refused:
        decide(ended, RespondToExtension("e1", "s1", "m1", accepted), Facts(now=AT_3))
    assert (refused.value.code, refused.value.status_code) == (ErrorCode.SESSION_NOT_ACTIVE, 409)
