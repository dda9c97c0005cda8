"""Properties of the pure core a host relies on, over generated snapshots."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from extension_fsm import (
    Extension,
    ExtensionError,
    ExtensionStatus,
    Facts,
    PaymentSession,
    PaymentStatus,
    Session,
    SessionStatus,
    Snapshot,
    TimeoutAction,
    decide,
)
from extension_fsm.machine import EXTENSION_MACHINE, PAYMENT_MACHINE, SESSION_MACHINE
from extension_fsm.model import (
    EndSession,
    Event,
    RequestExtension,
    RespondToExtension,
    TimeoutExtension,
)
from extension_fsm.simulator import make_payment, make_session

T0 = datetime(2026, 1, 1, tzinfo=UTC)
PENDING = Extension(
    "e1", "s1", 30, 15000, "p1", ExtensionStatus.PENDING, T0, T0 + timedelta(seconds=10), 10
)
RESOLVED = [s for s in ExtensionStatus if s is not ExtensionStatus.PENDING]

sessions = st.one_of(
    st.none(),
    st.sampled_from(list(SessionStatus)).map(
        lambda status: make_session(status=status, expires_at=T0 + timedelta(minutes=30))
    ),
)
payments = st.one_of(
    st.none(), st.sampled_from(list(PaymentStatus)).map(lambda s: make_payment(status=s))
)
facts = st.builds(
    Facts,
    now=st.integers(min_value=-60, max_value=3600).map(lambda s: T0 + timedelta(seconds=s)),
    timeout_action=st.sampled_from(list(TimeoutAction)),
    mitra_connected=st.booleans(),
    mitra_online=st.booleans(),
)


@given(
    extension=st.one_of(
        st.none(), st.sampled_from(RESOLVED).map(lambda s: replace(PENDING, status=s))
    ),
    session=sessions,
    payment=payments,
    known=facts,
)
def test_a_timeout_of_a_missing_or_resolved_extension_changes_nothing(
    extension: Extension | None,
    session: object,
    payment: object,
    known: Facts,
) -> None:
    """The timer and the sweep can arrive after an answer, another worker or the
    session's end resolved the extension (or it never existed): whatever the
    session, the payment, the clock and the presence, nothing is written, charged
    or sent."""
    snapshot = Snapshot(session=session, extension=extension, payment=payment)  # type: ignore[arg-type]
    decision = decide(snapshot, TimeoutExtension("e1"), known)
    assert decision.is_empty
    assert (decision.ledger, decision.log, decision.effects) == (None, (), ())


_MACHINES = {"extension": EXTENSION_MACHINE, "session": SESSION_MACHINE, "payment": PAYMENT_MACHINE}
_EVENTS: list[Event] = [
    RequestExtension("s1", "c1", 15, 15000, "p1"),
    RequestExtension("s1", "c1", 15, 15000, None),
    RespondToExtension("e1", "s1", "m1", True),
    RespondToExtension("e1", "s1", "m1", False),
    RespondToExtension("e1", "s1", "m2", True),
    TimeoutExtension("e1"),
    EndSession("s1"),
]


def _fired(entity: str, trigger: str, source: str, dest: str) -> bool:
    """Whether ``entity``'s machine declares ``trigger`` from ``source`` to ``dest``."""
    return any(
        row.trigger == trigger and source in row.source and row.dest == dest
        for row in _MACHINES[entity].rows
    )


def _worlds() -> Iterator[tuple[Snapshot, Event, Facts]]:
    """Every combination of rows, event, clock, policy and presence on a small grid."""
    extensions = [None, PENDING, replace(PENDING, status=ExtensionStatus.ACCEPTED)]
    sessions: list[Session | None] = [
        None,
        *(make_session(status=s, expires_at=T0 + timedelta(minutes=30)) for s in SessionStatus),
    ]
    payments: list[PaymentSession | None] = [None, *(make_payment(status=p) for p in PaymentStatus)]
    late = [-60, 5, 10, 70, 71, 3 * 3600]  # seconds after T0; the deadline is T0 + 10 s
    for ext, session, payment, event, at, action, reachable in itertools.product(
        extensions, sessions, payments, _EVENTS, late, TimeoutAction, (False, True)
    ):
        pending = ext if ext is not None and ext.status is ExtensionStatus.PENDING else None
        snapshot = Snapshot(session=session, extension=ext, payment=payment, pending=pending)
        facts = Facts(
            now=T0 + timedelta(seconds=at),
            timeout_action=action,
            mitra_connected=reachable,
            mitra_online=reachable,
            new_extension_id="e2",
            stale_after_seconds=60,
        )
        yield snapshot, event, facts


def test_decide_writes_only_statuses_its_machines_fired() -> None:
    """Over every world of the grid: each status a decision writes is a move
    its machine declares, under the trigger its audit line names (nothing is
    set by hand beside the machines), and a timeout handled past the stale
    bound never charges."""
    outcomes: set[tuple[str, str | None, str | None]] = set()
    for snapshot, event, facts in _worlds():
        try:
            decision = decide(snapshot, event, facts)
        except ExtensionError:
            continue  # refused: nothing is written
        moves = {(r.entity, r.entity_id): r for r in decision.log if r.from_status is not None}
        for entity, change in (
            ("extension", decision.extension),
            ("session", decision.session),
            ("payment", decision.payment),
        ):
            if change is None:
                continue
            row = change.row
            if change.expected is None:  # a new request starts where its machine starts
                assert entity == "extension" and row.status is EXTENSION_MACHINE.initial
                continue
            line = moves.pop((entity, row.id))
            assert (line.from_status, line.to_status) == (change.expected, str(row.status))
            assert _fired(entity, line.event, change.expected, str(row.status)), line
        assert not moves, f"audit lines without a written row: {moves}"
        paid = (
            decision.payment is not None and decision.payment.row.status is PaymentStatus.CONSUMED
        )
        if paid and isinstance(event, TimeoutExtension):
            assert snapshot.extension is not None
            assert facts.now - snapshot.extension.expires_at <= timedelta(seconds=60)
        ext = decision.extension.row if decision.extension else None
        outcomes.add(
            (
                type(event).__name__,
                str(ext.status) if ext else None,
                str(ext.reason) if ext and ext.reason else None,
            )
        )
    # the grid reaches every outcome the flow has (so the checks above ran on each)
    assert outcomes >= {
        ("RequestExtension", "pending", None),
        ("RespondToExtension", "accepted", None),
        ("RespondToExtension", "rejected", None),
        ("TimeoutExtension", "accepted", None),
        ("TimeoutExtension", "timeout", "safeguard"),
        ("TimeoutExtension", "timeout", "stale"),
        ("TimeoutExtension", "timeout", "timeout"),
        ("TimeoutExtension", "rejected", None),
        ("EndSession", "rejected", None),
    }
