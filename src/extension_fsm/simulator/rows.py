"""How a timeline run is shown: one :class:`TimelineRow` per step or timer change.

The runner (:mod:`extension_fsm.simulator.timeline`) decides *when* a row is
written; this module decides what it says: who acted, what the step did, the
status moves it caused, the states after it and the deliveries it made.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from ..model import TransitionRecord
from ..ports import StoreDump
from .results import DeliveryView
from .scenario import Step
from .simulation import StampedDelivery

__all__ = [
    "ACTOR",
    "TimelineRow",
    "change_lines",
    "delivery_view",
    "describe",
    "presence_line",
    "states_line",
]

#: who plays each kind of step
ACTOR = {
    "request": "customer",
    "customer": "customer",
    "accept": "mitra",
    "reject": "mitra",
    "mitra": "mitra",
    "restart": "ops",
    "set_config": "ops",
    "sweep": "ops",
    "end_session": "host",
}


@dataclass(slots=True)
class TimelineRow:
    """One line of the timeline: a step, or timers that changed something."""

    at: float
    actor: str
    event: str
    changes: list[str]
    states: str
    deliveries: list[DeliveryView]
    error: str | None = None


def describe(step: Step) -> str:
    """A step in words, e.g. ``request +30 min, 15000, payment p1``."""
    a = step.args
    if step.do == "request":
        text = f"request +{a['duration_minutes']} min, {a['price']}, payment {a['payment_id']}"
        return text + (f" as {a['customer_id']}" if "customer_id" in a else "")
    if step.do in ("accept", "reject"):
        target = f"#{a['extension']}" if "extension" in a else "latest"
        who = "".join(f" {k}={a[k]}" for k in ("mitra_id", "session_id") if k in a)
        return f"{step.do} {target}{who}"
    if step.do in ("mitra", "customer", "set_config"):
        return step.do + " " + ", ".join(f"{k}={_lower(v)}" for k, v in a.items())
    return {"restart": "restart (timers lost)", "end_session": "end session"}.get(step.do, step.do)


def change_lines(records: Sequence[TransitionRecord], name: Callable[[str], str]) -> list[str]:
    """Each status move as ``entity id: from → to (cause)``; extensions by ``name``."""
    return [
        f"{r.entity} {name(r.entity_id) if r.entity == 'extension' else r.entity_id}: "
        f"{r.from_status or '-'} → {r.to_status}" + (f" ({r.cause})" if r.cause else "")
        for r in records
    ]


def states_line(
    dump: StoreDump, extension_ids: Sequence[str], name: Callable[[str], str], presence: str
) -> str:
    """Every row's status after a step, in scenario order, then the presence flags."""
    by_id = {e.id: e for e in dump.extensions}
    parts = [f"session {s.status.value}" for s in dump.sessions]
    parts += [f"ext {name(i)} {by_id[i].status.value}" for i in extension_ids if i in by_id]
    parts += [f"{p.id} {p.status.value}" for p in dump.payments]
    parts.append(presence)
    return " · ".join(parts)


def presence_line(mitra: Mapping[str, bool], customer_socket: bool) -> str:
    """The mitra's three presence flags and the customer's socket, as ✓/✗."""

    def mark(flag: bool) -> str:
        return "✓" if flag else "✗"

    return (
        f"mitra ws{mark(mitra['on_session_socket'])} conn{mark(mitra['connected'])} "
        f"online{mark(mitra['online'])}, customer ws{mark(customer_socket)}"
    )


def delivery_view(stamped: StampedDelivery, rel: Callable[[datetime], float]) -> DeliveryView:
    """A recorded delivery as the timeline shows it, ``at`` relative to the start."""
    d = stamped.delivery
    data = d.payload.get("data") if d.channel == "push" else d.payload
    kind = data.get("type") if isinstance(data, dict) else None
    return DeliveryView(
        at=rel(stamped.at),
        channel=d.channel,
        to=d.participant.value,
        type=str(kind),
        payload=d.payload,
        taken=d.taken,
    )


def _lower(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)
