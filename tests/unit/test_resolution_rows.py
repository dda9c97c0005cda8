"""A resolution writes its own reason and failure cause over whatever the host
had left in those columns.

A pending row read from the host's tables may carry reason and failure-cause
texts this library does not know (kept in ``unknown_reason`` and
``unknown_failure_cause`` and written back unchanged while the row is left
alone).  Once the core resolves the extension, its row says why in the
library's own terms: the unknown texts are dropped, whichever way it was
resolved (accepted, rejected, timed out, cancelled by the session's end).
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
    SessionStatus,
    Snapshot,
    TimeoutAction,
    TimeoutReason,
    decide,
)
from extension_fsm.model import EndSession, Event, RespondToExtension, TimeoutExtension
from extension_fsm.simulator import make_payment, make_session

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DEADLINE = T0 + timedelta(seconds=10)
SESSION = make_session(status=SessionStatus.EXTENDING, expires_at=T0 + timedelta(minutes=30))
PENDING = Extension(
    "e1",
    "s1",
    30,
    15000,
    "p1",
    ExtensionStatus.PENDING,
    T0,
    DEADLINE,
    10,
    unknown_reason="host_reason_v9",
    unknown_failure_cause="host_cause_v9",
)
IN_WINDOW = Facts(now=T0 + timedelta(seconds=1))
AFTER = Facts(now=DEADLINE + timedelta(seconds=1), timeout_action=TimeoutAction.AUTO_REJECT)
ONLINE_AFTER = Facts(now=DEADLINE + timedelta(seconds=1), mitra_connected=True, mitra_online=True)

# event, facts, (status, via_timeout, reason, failure cause) the resolved row holds
RESOLUTIONS: dict[str, tuple[Event, Facts, tuple[object, ...]]] = {
    "accepted": (
        RespondToExtension("e1", "s1", "m1", True),
        IN_WINDOW,
        (ExtensionStatus.ACCEPTED, False, None, None),
    ),
    "rejected": (
        RespondToExtension("e1", "s1", "m1", False),
        IN_WINDOW,
        (ExtensionStatus.REJECTED, False, None, FailureCause.EXTENSION_REJECTED),
    ),
    "approved at the deadline": (
        TimeoutExtension("e1"),
        ONLINE_AFTER,
        (ExtensionStatus.ACCEPTED, True, None, None),
    ),
    "timed out": (
        TimeoutExtension("e1"),
        AFTER,
        (ExtensionStatus.TIMEOUT, True, TimeoutReason.TIMEOUT, FailureCause.EXTENSION_REJECTED),
    ),
    "cancelled by the session's end": (
        EndSession("s1"),
        IN_WINDOW,
        (ExtensionStatus.REJECTED, False, None, FailureCause.SESSION_ENDED),
    ),
}


@pytest.mark.parametrize("name", RESOLUTIONS, ids=list(RESOLUTIONS))
def test_a_resolution_replaces_the_host_texts_with_its_own(name: str) -> None:
    event, facts, expected = RESOLUTIONS[name]
    snapshot = Snapshot(session=SESSION, extension=PENDING, payment=make_payment())
    if isinstance(event, EndSession):
        snapshot = replace(snapshot, extension=None, pending=PENDING)
    decision = decide(snapshot, event, facts)
    assert decision.extension is not None
    assert decision.extension.expected == "pending"
    row = decision.extension.row
    assert (row.status, row.via_timeout, row.reason, row.failure_cause) == expected
    assert (row.unknown_reason, row.unknown_failure_cause) == (None, None)
    assert row.responded_at == facts.now
    # nothing else of the request changes
    assert (
        replace(
            row,
            status=PENDING.status,
            responded_at=None,
            via_timeout=False,
            reason=None,
            failure_cause=None,
            unknown_reason=PENDING.unknown_reason,
            unknown_failure_cause=PENDING.unknown_failure_cause,
        )
        == PENDING
    )
