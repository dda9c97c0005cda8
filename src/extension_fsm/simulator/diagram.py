"""State diagrams (Mermaid or Graphviz DOT) drawn from the machines' own tables.

Nothing here restates a transition: states, edges and guards all come from
``StateMachine.states`` / ``.rows`` / ``.final`` of the extension, session
and payment machines of :mod:`extension_fsm.machine`, the tables the core
fires through ``transitions``, so the picture cannot drift
from what the core runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from enum import Enum
from typing import Any, cast

from ..machine import (
    EXTENSION_MACHINE,
    PAYMENT_MACHINE,
    SESSION_MACHINE,
    StateMachine,
    TransitionRow,
)

__all__ = ["FORMATS", "edge_label", "render", "render_dot", "render_mermaid"]

FORMATS = ("mermaid", "dot")

AnyMachine = StateMachine[Any]
MACHINES: tuple[AnyMachine, ...] = (EXTENSION_MACHINE, SESSION_MACHINE, PAYMENT_MACHINE)


def edge_label(row: TransitionRow, rows: Sequence[TransitionRow], source: str) -> str:
    """``trigger [guard and guard]``; a later row of the same trigger and source says
    ``else`` because the machine tries rows top to bottom."""
    label = row.trigger
    if row.conditions:
        label += " [" + " and ".join(row.conditions) + "]"
    earlier = rows[: rows.index(row)]
    if any(r.trigger == row.trigger and source in r.source for r in earlier):
        label += " (else)"
    return label


def _edges(machine: AnyMachine) -> list[tuple[str, str, str]]:
    return [
        (src, row.dest, edge_label(row, machine.rows, src))
        for row in machine.rows
        for src in row.source
    ]


def _initial(machine: AnyMachine) -> str:
    first = next(iter(cast("Iterable[Enum]", machine.states)))
    return str(first.value)


def render_mermaid(machines: Sequence[AnyMachine] = MACHINES) -> str:
    """A Mermaid ``stateDiagram-v2`` with one composite state per machine."""
    lines = ["stateDiagram-v2"]
    for m in machines:
        lines.append(f"    state {m.name} {{")
        for state in m.states:
            lines.append(f'        state "{state.value}" as {m.name}_{state.value}')
        lines.append(f"        [*] --> {m.name}_{_initial(m)}")
        for src, dest, label in _edges(m):
            lines.append(f"        {m.name}_{src} --> {m.name}_{dest} : {label}")
        for state in m.states:
            if state in m.final:
                lines.append(f"        {m.name}_{state.value} --> [*]")
        lines.append("    }")
    return "\n".join(lines) + "\n"


def render_dot(machines: Sequence[AnyMachine] = MACHINES) -> str:
    """A Graphviz ``digraph`` with one cluster per machine; final states doubly circled."""
    lines = ["digraph extension_fsm {", "    rankdir=LR;", "    node [shape=circle];"]
    for m in machines:
        lines.append(f"    subgraph cluster_{m.name} {{")
        lines.append(f'        label="{m.name}";')
        lines.append(f'        {m.name}__start [shape=point, label=""];')
        for state in m.states:
            shape = "doublecircle" if state in m.final else "circle"
            lines.append(f'        {m.name}_{state.value} [label="{state.value}", shape={shape}];')
        lines.append(f"        {m.name}__start -> {m.name}_{_initial(m)};")
        for src, dest, label in _edges(m):
            lines.append(f'        {m.name}_{src} -> {m.name}_{dest} [label="{label}"];')
        lines.append("    }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render(fmt: str = "mermaid") -> str:
    """The three machines in ``fmt`` (one of :data:`FORMATS`)."""
    if fmt == "dot":
        return render_dot()
    if fmt == "mermaid":
        return render_mermaid()
    raise ValueError(f"unknown diagram format {fmt!r} (one of {', '.join(FORMATS)})")
