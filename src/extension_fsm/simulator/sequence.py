"""A timeline run as a Mermaid ``sequenceDiagram``.

Four lifelines: the customer, the server (the library and its host), the push
provider and the mitra.  Every step of the scenario is an arrow from whoever
took it (or a note, for a change of presence or an operator's action), every
timer that changed something is a note on the server, every refusal an arrow
back to the caller, and every delivery an arrow to its recipient: a socket
message straight from the server (crossed out when no socket took it), a push
through the push provider.
"""

from __future__ import annotations

from .rows import TimelineRow
from .timeline import RunResult

__all__ = ["sequence_diagram"]

_LIFELINE = {"customer": "C", "mitra": "M"}
_HEADER = [
    "sequenceDiagram",
    "    participant C as Customer",
    "    participant S as Server",
    "    participant P as Push provider",
    "    participant M as Mitra",
]


def sequence_diagram(result: RunResult) -> str:
    """The Mermaid source of ``result``'s timeline, one statement a line."""
    lines = list(_HEADER)
    for row in result.rows:
        lines.extend(_row(row))
    return "\n".join(lines) + "\n"


def _row(row: TimelineRow) -> list[str]:
    if row.event == "start":
        return []
    when = f"{_seconds(row.at)}s"
    caller = _LIFELINE.get(row.actor)
    out: list[str] = []
    if row.event.startswith("timers"):
        what = "<br/>".join(_text(c) for c in row.changes) or "delivery retried"
        out.append(f"    Note over S: {when} timer<br/>{what}")
    elif caller is not None and _is_call(row.event):
        out.append(f"    {caller}->>S: {when} {_text(row.event)}")
    else:
        where = caller or "S"
        out.append(f"    Note over {where}: {when} {_text(row.event)}")
    if row.error is not None:
        back = caller or "S"
        out.append(f"    S--x{back}: {_text(row.error)}")
    elif row.changes and not row.event.startswith("timers"):
        out.append(f"    Note over S: {'<br/>'.join(_text(c) for c in row.changes)}")
    for d in row.deliveries:
        to = _LIFELINE[d.to]
        if d.channel == "push":
            out.append(f"    S->>P: push {d.type}")
            out.append(f"    P->>{to}: {_text(_title(d.payload))}")
        elif d.taken:
            out.append(f"    S->>{to}: {d.type}")
        else:
            out.append(f"    S-x{to}: {d.type} (no socket)")
    return out


def _is_call(event: str) -> bool:
    """A step that is a call to the server (not a change of presence)."""
    return event.split(" ", 1)[0] in ("request", "accept", "reject")


def _title(payload: object) -> str:
    if isinstance(payload, dict):
        return str(payload.get("title", "push"))
    return "push"


def _seconds(at: float) -> str:
    return str(int(at)) if at == int(at) else f"{at:g}"


def _text(text: str) -> str:
    """Text Mermaid shows as written: ``;`` ends a statement and ``#`` starts an
    entity code there, so both are spelled out."""
    return text.replace(";", ",").replace("#", "").replace("\n", " ")
