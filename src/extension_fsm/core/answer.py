"""The mitra answers a pending extension: accepted and charged, or rejected unpaid."""

from __future__ import annotations

from ..errors import ErrorCode, ExtensionError
from ..machine import EXTENSION_MACHINE, Guard, InvalidMove
from ..model import (
    ACTOR_MITRA,
    Facts,
    FailureCause,
    RespondToExtension,
    SessionStatus,
)
from .outcomes import accept, close
from .snapshot import Decision, Snapshot

__all__ = ["respond"]

_NOT_PENDING = "Extension not found or already resolved"


def respond(s: Snapshot, e: RespondToExtension, f: Facts) -> Decision:
    """The mitra's answer, counted only while the extension is pending and in its window."""
    session = s.session
    if session is None or session.id != e.session_id or session.mitra_id != e.mitra_id:
        raise ExtensionError(ErrorCode.FORBIDDEN, "Session not found")
    ext = s.extension
    if ext is None or ext.session_id != session.id:
        # Seed: one compare-and-set found nothing, whether the id is unknown,
        # of another session or resolved: one code, one text (clients key on it).
        raise ExtensionError(ErrorCode.EXTENSION_RESOLVED, _NOT_PENDING)
    trigger = "accept" if e.accepted else "reject"
    try:
        status = EXTENSION_MACHINE.fire(
            ext.status, trigger, Guard(now=f.now, deadline=ext.expires_at)
        )
    except InvalidMove as move:
        message = "The answer window has passed" if move.guarded else _NOT_PENDING
        raise ExtensionError(ErrorCode.EXTENSION_RESOLVED, message) from None
    if session.status is SessionStatus.ENDED:
        raise ExtensionError(ErrorCode.SESSION_NOT_ACTIVE, "Session already ended")
    if session.status is SessionStatus.UNKNOWN:  # the host moved it somewhere we do not know
        raise ExtensionError(ErrorCode.SESSION_NOT_ACTIVE, "Session is not active")
    if e.accepted:
        return accept(s, ext, f, status=status, via_timeout=False, actor=ACTOR_MITRA, event=trigger)
    return close(
        s,
        ext,
        f,
        status=status,
        cause=FailureCause.EXTENSION_REJECTED,
        actor=ACTOR_MITRA,
        event=trigger,
    )
