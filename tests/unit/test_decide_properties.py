"""Properties of the pure core a host relies on, over generated snapshots."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

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
from extension_fsm.model import TimeoutExtension
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
