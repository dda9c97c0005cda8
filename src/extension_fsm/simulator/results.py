"""What a timeline run reports: the result document, and the behavioural
checks (invariants 5 and 8 of ``docs/design.md``) that only a run can make.

The document's names are the contract of issue #4: ``extensions``,
``session``, ``payments``, ``transactions``, ``deliveries``, ``errors``,
``invariants``; every time is in seconds from the start of the timeline.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..core import MAX_DURATION_MINUTES, MIN_DURATION_MINUTES
from ..model import JSONValue, PaymentStatus, Session, TimeoutAction, TransitionRecord
from ..ports import StoreDump

__all__ = ["DeliveryView", "request_problems", "result_document", "timeout_problems"]


@dataclass(frozen=True, slots=True)
class DeliveryView:
    """One socket send or push, as the timeline shows it."""

    at: float
    channel: str  # "ws" | "push"
    to: str  # "mitra" | "customer"
    type: str
    payload: Mapping[str, JSONValue]
    taken: bool  # a push always is; a ws send only if a socket took it

    def to_json(self) -> dict[str, JSONValue]:
        """The result document's ``deliveries`` entry."""
        return {
            "at": self.at,
            "channel": self.channel,
            "to": self.to,
            "type": self.type,
            "payload": dict(self.payload),
        }


def result_document(
    dump: StoreDump,
    *,
    extension_ids: Sequence[str],
    payment_order: Sequence[str],
    deliveries: Sequence[DeliveryView],
    errors: Sequence[Mapping[str, JSONValue]],
    violations: Sequence[str],
    rel: Callable[[datetime], float],
) -> dict[str, JSONValue]:
    """The ``--json`` result document of one run, from its final rows."""
    by_id = {e.id: e for e in dump.extensions}
    extensions: list[JSONValue] = []
    for ext_id in extension_ids:
        e = by_id[ext_id]
        extensions.append(
            {
                "id": e.id,
                "status": e.status.value,
                "via_timeout": e.via_timeout,
                "reason": e.reason.value if e.reason else None,
                "duration_minutes": e.duration_minutes,
                "price": e.price,
                "payment_id": e.payment_session_id,
                "resolved_at": rel(e.responded_at) if e.responded_at else None,
            }
        )
    session = dump.sessions[0]
    payments = {p.id: p for p in dump.payments}
    payment_rows: list[JSONValue] = []
    for pid in payment_order:
        cause = payments[pid].failure_cause
        payment_rows.append(
            {
                "id": pid,
                "status": payments[pid].status.value,
                "failure_cause": cause.value if cause else None,
            }
        )
    return {
        "extensions": extensions,
        "session": {
            "id": session.id,
            "status": session.status.value,
            "expires_at": rel(session.expires_at),
        },
        "payments": payment_rows,
        "transactions": [{"type": t.type.value, "amount": t.amount} for t in dump.ledger],
        "deliveries": [d.to_json() for d in deliveries],
        "errors": [dict(e) for e in errors],
        "invariants": {"ok": not violations, "violations": list(violations)},
    }


def request_problems(
    session: Session, customer: str, args: Mapping[str, Any], before: StoreDump
) -> list[str]:
    """Why a request the library *took* should have been refused (invariant 8); [] if none.

    ``before`` is the store as it was when the request was made.
    """
    payment = next((p for p in before.payments if p.id == args["payment_id"]), None)
    problems = []
    if customer != session.customer_id:
        problems.append(f"customer {customer} is not the session's")
    if payment is None:
        problems.append("its payment session does not exist")
    else:
        if payment.customer_id != customer:
            problems.append(f"payment {payment.id} belongs to {payment.customer_id}")
        if payment.status is not PaymentStatus.CONFIRMED:
            problems.append(f"payment {payment.id} is {payment.status.value}")
        if not payment.is_extension or payment.is_first_session_discount:
            problems.append(f"payment {payment.id} is not a plain extension payment")
        if payment.amount != args["price"]:
            problems.append(f"price {args['price']} != payment amount {payment.amount}")
    if not MIN_DURATION_MINUTES <= args["duration_minutes"] <= MAX_DURATION_MINUTES:
        problems.append(f"duration {args['duration_minutes']} is out of range")
    return problems


def timeout_problems(
    records: Sequence[TransitionRecord],
    timeout_action: str,
    mitra_reachable: bool,
    name: Callable[[str], str] = str,
) -> list[str]:
    """Invariant 5: what each timeout in ``records`` did must match the policy in force
    and whether the mitra was connected and online at that moment."""
    policy = TimeoutAction.parse(timeout_action)
    out: list[str] = []
    for r in records:
        if r.entity != "extension" or r.event != "time_out":
            continue
        if r.to_status == "accepted" and not (
            policy is TimeoutAction.AUTO_APPROVE and mitra_reachable
        ):
            out.append(
                f"5: extension {name(r.entity_id)} approved via timeout under {policy.value} "
                f"with the mitra reachable={mitra_reachable}"
            )
        if r.to_status == "timeout":
            want = (
                "extension_rejected"
                if policy is TimeoutAction.AUTO_REJECT
                else "extension_safeguard_tripped"
            )
            if r.cause != want or (policy is TimeoutAction.AUTO_APPROVE and mitra_reachable):
                out.append(
                    f"5: extension {name(r.entity_id)} timed out ({r.cause}) under "
                    f"{policy.value} with the mitra reachable={mitra_reachable}"
                )
    return out
