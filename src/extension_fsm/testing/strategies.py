"""Hypothesis strategies for sessions, payments and scenarios, and the fixed
cast the race machine plays with (four sessions, three customers, four mitras,
nineteen payments)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import strategies as st

from ..model import PaymentSession, PaymentStatus, Session, SessionStatus
from ..simulator.randomize import random_scenario
from ..simulator.scenario import Scenario, parse_scenario

__all__ = [
    "CUSTOMERS",
    "MITRAS",
    "PAYMENTS",
    "SESSIONS",
    "durations",
    "payments",
    "scenario_documents",
    "scenarios",
    "sessions",
]

# session id -> (customer, mitra, seconds until expiry)
SESSIONS = {
    "s1": ("c1", "m1", 1200),
    "s2": ("c2", "m2", 40),
    "s3": ("c1", "m3", 600),
    "s4": ("c3", "m1", 900),
}
CUSTOMERS = ("c1", "c2", "c3")
MITRAS = ("m1", "m2", "m3", "m4")
# payment id -> (customer, amount, status, is_extension, is_first_session_discount)
PAYMENTS = {
    **{f"p{i}": ("c1", 10000 + 1000 * i, PaymentStatus.CONFIRMED, True, False) for i in range(8)},
    **{f"q{i}": ("c2", 20000 + 1000 * i, PaymentStatus.CONFIRMED, True, False) for i in range(4)},
    **{f"r{i}": ("c3", 30000 + 1000 * i, PaymentStatus.CONFIRMED, True, False) for i in range(4)},
    "p_discount": ("c1", 5000, PaymentStatus.CONFIRMED, True, True),
    "p_plain": ("c1", 5000, PaymentStatus.CONFIRMED, False, False),
    "p_unpaid": ("c1", 5000, PaymentStatus.PENDING, True, False),
}

#: request durations: mostly valid minutes, plus the edges and ill-typed values
durations = st.one_of(
    st.integers(1, 1440),
    st.sampled_from([1, 1440, 0, -1, 1441, 10**6, True, "30", 2.5, None]),
)

_ids = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12)
_T0 = datetime(2026, 1, 1, tzinfo=UTC)


# A host seeds these; ``extending`` exists only with a pending extension.
_SESSION_STATUSES = [SessionStatus.ACTIVE, SessionStatus.CLOSING, SessionStatus.ENDED]
_PAYMENT_STATUSES = [s for s in PaymentStatus if s is not PaymentStatus.UNKNOWN]


def sessions(
    *, statuses: st.SearchStrategy[SessionStatus] | None = None
) -> st.SearchStrategy[Session]:
    """Session rows as a host seeds them, with timezone-aware expiries (active,
    closing or ended unless ``statuses`` is given)."""
    if statuses is None:
        statuses = st.sampled_from(_SESSION_STATUSES)
    return st.builds(
        Session,
        id=_ids,
        customer_id=_ids,
        mitra_id=_ids,
        status=statuses,
        expires_at=st.integers(-3600, 86400).map(lambda s: _T0 + timedelta(seconds=s)),
        customer_display_name=st.text(min_size=1, max_size=20),
    )


def payments(
    *, statuses: st.SearchStrategy[PaymentStatus] | None = None
) -> st.SearchStrategy[PaymentSession]:
    """Payment-session rows (host-owned; any known status unless ``statuses`` is given)."""
    if statuses is None:
        statuses = st.sampled_from(_PAYMENT_STATUSES)
    return st.builds(
        PaymentSession,
        id=_ids,
        customer_id=_ids,
        status=statuses,
        amount=st.integers(0, 10**7),
        is_extension=st.booleans(),
        is_first_session_discount=st.booleans(),
    )


def scenario_documents() -> st.SearchStrategy[dict[str, Any]]:
    """Scenario documents (the timeline file format), drawn like ``simulate --random``."""
    return st.randoms(use_true_random=False).map(random_scenario)


def scenarios() -> st.SearchStrategy[Scenario]:
    """Parsed :class:`~extension_fsm.scenario.Scenario` objects."""
    return scenario_documents().map(parse_scenario)
