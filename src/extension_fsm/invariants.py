"""The invariants of ``docs/design.md`` as checks over a :class:`~extension_fsm.ports.StoreDump`.

These are the invariants that can be read off the rows alone; the ones about
behaviour (who may call, what bad input writes, what presence said at the
moment of a timeout) are checked by the tests and the simulator as the calls
happen.  Each check returns readable violations; an empty list means all hold.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping
from datetime import datetime, timedelta

from .model import (
    ExtensionStatus,
    MessageType,
    Participant,
    PaymentStatus,
    SessionStatus,
    TransactionType,
)
from .ports import StoreDump

__all__ = ["check_invariants"]

_FINAL_EXTENSION = {s.value for s in ExtensionStatus} - {ExtensionStatus.PENDING.value}
_PAYMENT_FOR = {
    ExtensionStatus.PENDING: PaymentStatus.CONFIRMED,
    ExtensionStatus.ACCEPTED: PaymentStatus.CONSUMED,
    ExtensionStatus.REJECTED: PaymentStatus.FAILED,
    ExtensionStatus.TIMEOUT: PaymentStatus.FAILED,
}


def check_invariants(
    dump: StoreDump,
    *,
    now: datetime,
    sweep_interval: float | None = None,
    initial_expiry: Mapping[str, datetime] | None = None,
    require_delivered: bool = False,
) -> list[str]:
    """Every violation of invariants 1-4, 6 and 7 (``docs/design.md``) in ``dump`` at ``now``.

    ``sweep_interval`` enables the liveness check (6); ``initial_expiry`` (the
    sessions' expiry before any extension) enables the expiry part of (3);
    ``require_delivered`` demands that every outbox row was delivered (7).
    """
    out: list[str] = []
    out += _exactly_once(dump)
    out += _money(dump)
    out += _ledger(dump, initial_expiry)
    out += _sessions(dump)
    if sweep_interval is not None:
        out += _liveness(dump, now, sweep_interval)
    out += _notifications(dump, require_delivered)
    return out


def _exactly_once(dump: StoreDump) -> list[str]:
    out: list[str] = []
    left_pending: Counter[str] = Counter()
    for rec in dump.log:
        if rec.entity != "extension":
            continue
        if rec.from_status in _FINAL_EXTENSION:
            out.append(f"1: extension {rec.entity_id} left final {rec.from_status} ({rec.event})")
        if rec.from_status == ExtensionStatus.PENDING.value:
            left_pending[rec.entity_id] += 1
    for ext_id, n in left_pending.items():
        if n > 1:
            out.append(f"1: extension {ext_id} left pending {n} times")
    for ext in dump.extensions:
        if ext.status is not ExtensionStatus.PENDING and left_pending[ext.id] != 1:
            out.append(f"1: extension {ext.id} is {ext.status.value} with no single resolution")
    return out


def _money(dump: StoreDump) -> list[str]:
    out: list[str] = []
    payments = {p.id: p for p in dump.payments}
    live: Counter[str] = Counter()
    for ext in dump.extensions:
        payment = payments.get(ext.payment_session_id)
        if payment is None:
            out.append(f"2: extension {ext.id} has no payment session")
            continue
        if ext.status in (ExtensionStatus.PENDING, ExtensionStatus.ACCEPTED):
            live[payment.id] += 1
        want = _PAYMENT_FOR[ext.status]
        # A status the host wrote that the library does not know is the host's
        # (never written by the library); the ledger checks still catch a charge.
        if payment.status is not want and payment.status is not PaymentStatus.UNKNOWN:
            out.append(
                f"2: extension {ext.id} is {ext.status.value} but its payment {payment.id} "
                f"is {payment.status.value} (want {want.value})"
            )
    out += [f"2: payment {p} backs {n} live extensions" for p, n in live.items() if n > 1]
    consumed = Counter(
        r.entity_id for r in dump.log if r.entity == "payment" and r.to_status == "consumed"
    )
    out += [f"2: payment {p} consumed {n} times" for p, n in consumed.items() if n > 1]
    return out


def _ledger(dump: StoreDump, initial_expiry: Mapping[str, datetime] | None) -> list[str]:
    out: list[str] = []
    charges: defaultdict[str, list[int]] = defaultdict(list)
    for entry in dump.ledger:
        if entry.type is TransactionType.EXTENSION:
            charges[entry.extension_id].append(entry.amount)
    accepted_minutes: Counter[str] = Counter()
    for ext in dump.extensions:
        got = charges.pop(ext.id, [])
        if ext.status is ExtensionStatus.ACCEPTED:
            accepted_minutes[ext.session_id] += ext.duration_minutes
            if got != [ext.price]:
                out.append(f"3: accepted extension {ext.id} charged {got}, want [{ext.price}]")
        elif got:
            out.append(f"3: {ext.status.value} extension {ext.id} was charged {got}")
    out += [f"3: ledger rows for unknown extension {e}" for e in charges]
    if initial_expiry is not None:
        for session in dump.sessions:
            start = initial_expiry.get(session.id)
            if start is None:
                continue
            floor = start + timedelta(minutes=accepted_minutes[session.id])
            if session.expires_at < floor or (
                not accepted_minutes[session.id] and session.expires_at != start
            ):
                out.append(
                    f"3: session {session.id} expires {session.expires_at.isoformat()}, "
                    f"accepted +{accepted_minutes[session.id]} min from {start.isoformat()}"
                )
    return out


def _sessions(dump: StoreDump) -> list[str]:
    out: list[str] = []
    pending: Counter[str] = Counter(
        e.session_id for e in dump.extensions if e.status is ExtensionStatus.PENDING
    )
    for session in dump.sessions:
        n = pending[session.id]
        if n > 1:
            out.append(f"4: session {session.id} has {n} pending extensions")
        host_status = session.status is SessionStatus.UNKNOWN  # the host's own value
        if (session.status is SessionStatus.EXTENDING) != (n > 0) and not host_status:
            out.append(f"4: session {session.id} is {session.status.value} with {n} pending")
    for rec in dump.log:
        if rec.entity == "session" and rec.from_status == SessionStatus.ENDED.value:
            out.append(f"4: ended session {rec.entity_id} moved to {rec.to_status}")
    return out


def _liveness(dump: StoreDump, now: datetime, interval: float) -> list[str]:
    limit = timedelta(seconds=interval)
    return [
        f"6: extension {e.id} still pending {(now - e.expires_at).total_seconds():.1f}s "
        "past its deadline"
        for e in dump.extensions
        if e.status is ExtensionStatus.PENDING and now > e.expires_at + limit
    ]


def _notifications(dump: StoreDump, require_delivered: bool) -> list[str]:
    out: list[str] = []
    responses = Counter(
        m.dedupe_key
        for m, _ in dump.outbox
        if m.dedupe_key.endswith(
            f":{MessageType.EXTENSION_RESPONSE.value}:{Participant.CUSTOMER.value}"
        )
    )
    sessions = {s.id for s in dump.sessions}
    for ext in dump.extensions:
        key = f"{ext.id}:{MessageType.EXTENSION_RESPONSE.value}:{Participant.CUSTOMER.value}"
        want = 0 if ext.status is ExtensionStatus.PENDING else 1
        if ext.session_id not in sessions:  # the host deleted the session: no one to tell
            want = min(want, responses[key])
        if responses[key] != want:
            out.append(
                f"7: extension {ext.id} ({ext.status.value}) has {responses[key]} "
                f"extension_response rows, want {want}"
            )
    if require_delivered:
        out += [
            f"7: outbox row {m.id} ({m.dedupe_key}) undelivered" for m, ok in dump.outbox if not ok
        ]
    return out
