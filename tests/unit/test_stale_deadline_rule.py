"""Stale deadlines never charge: a timeout handled later than the bound past
its deadline (an outage, stopped workers, a cutover) times out unpaid with
``reason: "stale"``, whoever is online now.  A pure rule of the core, with the
bound read from the host's config."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

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
from extension_fsm.adapters.config import StaticConfig
from extension_fsm.model import (
    FailureCause,
    MessageType,
    Notify,
    PaymentConsumed,
    TimeoutExtension,
    TimeoutReason,
)
from extension_fsm.ports import stale_after_seconds
from extension_fsm.simulator import make_payment, make_session

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DEADLINE = T0 + timedelta(seconds=10)
EXT = Extension("e1", "s1", 15, 15000, "p1", ExtensionStatus.PENDING, T0, DEADLINE, 10)
SNAPSHOT = Snapshot(
    session=make_session(status=SessionStatus.EXTENDING, expires_at=T0 + timedelta(minutes=30)),
    extension=EXT,
    payment=make_payment(),
)


def _timeout(late: timedelta, **facts: Any) -> Any:
    known = Facts(now=DEADLINE + late, mitra_connected=True, mitra_online=True, **facts)
    return decide(SNAPSHOT, TimeoutExtension("e1"), known)


def test_stale_deadline_hours_late_with_the_mitra_online_times_out_unpaid() -> None:
    decision = _timeout(timedelta(hours=3))
    assert decision.extension is not None and decision.payment is not None
    ext = decision.extension.row
    assert (ext.status, ext.reason, ext.via_timeout) == (
        ExtensionStatus.TIMEOUT,
        TimeoutReason.STALE,
        True,
    )
    assert decision.payment.row.status is PaymentStatus.FAILED
    assert decision.payment.row.failure_cause is FailureCause.EXTENSION_SAFEGUARD_TRIPPED
    assert decision.ledger is None
    assert not any(isinstance(e, PaymentConsumed) for e in decision.effects)
    (response,) = [
        e
        for e in decision.effects
        if isinstance(e, Notify) and e.message["type"] == MessageType.EXTENSION_RESPONSE
    ]
    assert response.message["reason"] == "stale" and response.message["accepted"] is False
    assert decision.session is not None
    assert decision.session.row.status is SessionStatus.CLOSING


@pytest.mark.parametrize(
    ("late", "bound", "want"),
    [
        (timedelta(0), 60, ExtensionStatus.ACCEPTED),
        (timedelta(seconds=60), 60, ExtensionStatus.ACCEPTED),  # the bound is inclusive
        (timedelta(seconds=60, microseconds=1), 60, ExtensionStatus.TIMEOUT),
        (timedelta(hours=3), 4 * 3600, ExtensionStatus.ACCEPTED),  # a host's wider bound
        (timedelta(seconds=1), 0, ExtensionStatus.TIMEOUT),
    ],
)
def test_stale_deadline_the_bound_decides_between_approval_and_stale(
    late: timedelta, bound: float, want: ExtensionStatus
) -> None:
    decision = _timeout(late, stale_after_seconds=bound)
    ext = decision.extension.row
    assert ext.status is want
    assert ext.reason is (None if want is ExtensionStatus.ACCEPTED else TimeoutReason.STALE)
    charged = decision.payment.row.status is PaymentStatus.CONSUMED
    assert charged is (want is ExtensionStatus.ACCEPTED)


def test_stale_deadline_under_auto_reject_is_the_configured_timeout() -> None:
    """Nothing would be charged anyway: the configured action is what happened."""
    decision = _timeout(timedelta(hours=3), timeout_action=TimeoutAction.AUTO_REJECT)
    ext = decision.extension.row
    assert (ext.status, ext.reason) == (ExtensionStatus.TIMEOUT, TimeoutReason.TIMEOUT)
    assert decision.payment.row.failure_cause is FailureCause.EXTENSION_REJECTED


def test_stale_deadline_with_the_mitra_away_is_still_stale() -> None:
    """Presence asked hours later says nothing about the deadline either way."""
    known = Facts(now=DEADLINE + timedelta(hours=3))
    decision = decide(SNAPSHOT, TimeoutExtension("e1"), known)
    assert decision.extension.row.reason is TimeoutReason.STALE


class _OldConfig:
    """A host's config written before the bound existed."""

    async def extension_timeout_seconds(self) -> int:
        return 10

    async def extension_timeout_action(self) -> str:
        return "auto_approve"

    async def closure_grace_seconds(self) -> int:
        return 60


class _Bound(_OldConfig):
    def __init__(self, value: object) -> None:
        self.value = value

    async def extension_stale_after_seconds(self) -> object:
        return self.value


async def test_stale_deadline_bound_defaults_to_60_seconds_for_a_config_without_it() -> None:
    assert await stale_after_seconds(_OldConfig()) == 60
    assert await stale_after_seconds(StaticConfig()) == 60
    assert await stale_after_seconds(StaticConfig(stale_after_seconds=5)) == 5


@pytest.mark.parametrize(
    ("value", "want"),
    [
        (120, 120.0),
        (0, 0.0),
        ("90", 90.0),
        (2.5, 2.5),
        (-1, 0.0),
        ("soon", 0.0),
        (None, 0.0),
        (float("nan"), 0.0),
        (float("inf"), 0.0),
        (True, 0.0),
    ],
)
async def test_stale_deadline_a_doubtful_bound_never_widens(
    value: object, want: float, caplog: pytest.LogCaptureFixture
) -> None:
    """A bound that is not seconds >= 0 is 0: a late deadline never charges."""
    assert await stale_after_seconds(_Bound(value)) == want
    assert ("using 0" in caplog.text) is (want == 0.0 and value != 0)
