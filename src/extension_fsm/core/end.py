"""The host ends the session: a pending extension is cancelled, nothing charged."""

from __future__ import annotations

from dataclasses import replace

from ..errors import ErrorCode, ExtensionError
from ..model import ACTOR_HOST, Facts, SessionStatus
from .outcomes import cancel, move_session, record
from .snapshot import NOTHING, Change, Decision, Snapshot

__all__ = ["end"]


def end(s: Snapshot, f: Facts) -> Decision:
    """The session ended (idempotent), with its pending extension cancelled unpaid."""
    session = s.session
    if session is None:
        raise ExtensionError(ErrorCode.NOT_FOUND, "Session not found")
    if session.status is SessionStatus.ENDED:
        return NOTHING  # ending is idempotent; ``ended`` is final
    cancelled = cancel(s, s.pending, f, ACTOR_HOST) if s.pending else NOTHING
    ended = move_session(
        session, "end", f.now, expires_at=session.expires_at, closure_deadline=None
    )
    return replace(
        cancelled,
        session=Change(str(session.status), ended),
        log=(*cancelled.log, record(session, ended.status, "end", ACTOR_HOST, f.now)),
    )
