"""The answer window passed: the configured action, under the seed's safeguard
and the stale-deadline rule (handled too late after its deadline: never charged)."""

from __future__ import annotations

from datetime import timedelta

from ..machine import (
    EXTENSION_MACHINE,
    Guard,
    InvalidMove,
    auto_approve_policy,
    handled_in_time,
)
from ..model import (
    ACTOR_SYSTEM,
    ExtensionStatus,
    Facts,
    FailureCause,
    PaymentStatus,
    SessionStatus,
    TimeoutReason,
)
from .outcomes import accept, cancel, close, extended_expiry
from .snapshot import NOTHING, Decision, Snapshot

__all__ = ["time_out"]


def time_out(s: Snapshot, f: Facts) -> Decision:
    """Decide a due extension; nothing when it is resolved already or not due yet."""
    ext = s.extension
    session = s.session
    if ext is None or ext.status is not ExtensionStatus.PENDING:
        return NOTHING  # resolved first by an answer, another worker or the session's end
    if session is not None and session.status is SessionStatus.ENDED:
        return cancel(s, ext, f, ACTOR_SYSTEM)
    # A payment the host moved away from ``confirmed`` (or to a status this
    # library does not know), a session it moved away from ``extending`` or
    # deleted, an expiry no minutes can be added to (``infinity``): nothing can
    # be charged; the extension still times out, uncharged, rather than stay
    # pending for ever (or be set aside for ever).
    chargeable = (
        session is not None
        and s.payment is not None
        and s.payment.status is PaymentStatus.CONFIRMED
        and session.status is SessionStatus.EXTENDING
        and extended_expiry(session, f.now, ext.duration_minutes) is not None
    )
    guard = Guard(
        now=f.now,
        deadline=ext.expires_at,
        timeout_action=f.timeout_action,
        mitra_connected=f.mitra_connected,
        mitra_online=f.mitra_online,
        chargeable=chargeable,
        stale_after=timedelta(seconds=f.stale_after_seconds),
    )
    try:
        status = EXTENSION_MACHINE.fire(ext.status, "time_out", guard)
    except InvalidMove:
        return NOTHING  # not due yet
    if status is ExtensionStatus.ACCEPTED:
        return accept(
            s, ext, f, status=status, via_timeout=True, actor=ACTOR_SYSTEM, event="time_out"
        )
    return close(
        s,
        ext,
        f,
        status=status,
        cause=(
            # Seed: auto_approve whose safeguard tripped is tagged apart from a configured reject.
            FailureCause.EXTENSION_SAFEGUARD_TRIPPED
            if auto_approve_policy(guard)
            else FailureCause.EXTENSION_REJECTED
        ),
        reason=_reason(guard),
        actor=ACTOR_SYSTEM,
        event="time_out",
        # The host moved the session away from ``extending`` (not through
        # ``end_session``): the extension still times out, uncharged, and the
        # session stays as the host set it, so nothing is left pending for ever.
        close_session=session is not None and session.status is SessionStatus.EXTENDING,
    )


def _reason(guard: Guard) -> TimeoutReason:
    """Why a due extension timed out unpaid: the configured ``auto_reject``; an
    ``auto_approve`` handled too long after its deadline (stale: presence now
    says nothing about then); or the seed's safeguard (mitra not reachable)."""
    if not auto_approve_policy(guard):
        return TimeoutReason.TIMEOUT
    if not handled_in_time(guard):
        return TimeoutReason.STALE
    return TimeoutReason.SAFEGUARD
