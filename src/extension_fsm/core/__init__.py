"""The pure core: ``decide(snapshot, event, facts) -> Decision``.

No I/O, no clock, no globals.  The shell loads a :class:`Snapshot`, passes
the event and the :class:`~extension_fsm.model.Facts` it gathered (time,
config, presence, a fresh id), and gets back the rows to write (each with the
status it must still have: compare-and-set), the ledger entry, the audit log
and the effects to deliver after commit.  Every status move (extension,
session, payment) is fired through the ``transitions`` machines of
:mod:`extension_fsm.machine`; a new request starts at the extension
machine's initial state.

One module per event: :mod:`.request`, :mod:`.answer`, :mod:`.timeout`,
:mod:`.end`; the outcomes they share (accepted, closed unpaid, cancelled) are
in :mod:`.outcomes`.
"""

from __future__ import annotations

from ..model import EndSession, Event, Facts, RequestExtension, RespondToExtension, TimeoutExtension
from .answer import respond
from .end import end
from .request import request
from .snapshot import (
    MAX_DURATION_MINUTES,
    MIN_DURATION_MINUTES,
    NOTHING,
    Change,
    Decision,
    Snapshot,
    Undecidable,
)
from .timeout import time_out

__all__ = [
    "MAX_DURATION_MINUTES",
    "MIN_DURATION_MINUTES",
    "NOTHING",
    "Change",
    "Decision",
    "Snapshot",
    "Undecidable",
    "decide",
]


def decide(snapshot: Snapshot, event: Event, facts: Facts) -> Decision:
    """Decide ``event`` on ``snapshot`` given ``facts``; raise ExtensionError to refuse."""
    match event:
        case RequestExtension():
            return request(snapshot, event, facts)
        case RespondToExtension():
            return respond(snapshot, event, facts)
        case TimeoutExtension():
            return time_out(snapshot, facts)
        case EndSession():
            return end(snapshot, facts)
    raise TypeError(f"unknown event {event!r}")  # pragma: no cover
