"""The one ``transitions`` declaration of both machines, readable as a table.

Two machines, each built once at import and shared by every decision (a
``Machine`` per extension is the largest cost in that library).  Models are
tiny throw-away cursors that carry a state; guards are named conditions that
read the :class:`Guard` context passed to the trigger.  The diagram
(``extension-fsm diagram``) is drawn from these same tables.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any, Generic, TypeVar, cast

from transitions import Machine, MachineError

from .model import ExtensionStatus, SessionStatus, TimeoutAction

__all__ = [
    "EXTENSION_MACHINE",
    "EXTENSION_TRANSITIONS",
    "SESSION_MACHINE",
    "SESSION_TRANSITIONS",
    "Guard",
    "InvalidMove",
    "StateMachine",
    "TransitionRow",
]

S = TypeVar("S", bound=Enum)


@dataclass(frozen=True, slots=True)
class Guard:
    """What the guards may look at; the only argument a trigger receives."""

    now: datetime
    deadline: datetime | None = None
    timeout_action: TimeoutAction = TimeoutAction.AUTO_APPROVE
    mitra_connected: bool = False
    mitra_online: bool = False


# ----------------------------------------------------------------- named guards


def within_window(guard: Guard) -> bool:
    """An explicit answer counts only before the deadline."""
    return guard.deadline is None or guard.now < guard.deadline


def is_due(guard: Guard) -> bool:
    """The timeout fires only once the deadline has passed."""
    return guard.deadline is not None and guard.now >= guard.deadline


def auto_approve_policy(guard: Guard) -> bool:
    """``extension_default_action_on_timeout`` is ``auto_approve``."""
    return guard.timeout_action is TimeoutAction.AUTO_APPROVE


def mitra_reachable(guard: Guard) -> bool:
    """The seed's safeguard: connected over WebSocket AND flagged online."""
    return guard.mitra_connected and guard.mitra_online


GUARDS: dict[str, Callable[[Guard], bool]] = {
    f.__name__: f for f in (within_window, is_due, auto_approve_policy, mitra_reachable)
}


@dataclass(frozen=True, slots=True)
class TransitionRow:
    """One line of a machine's table."""

    trigger: str
    source: tuple[str, ...]
    dest: str
    conditions: tuple[str, ...] = ()


# ------------------------------------------------------------------- the tables
# Order matters where a trigger has two rows from one source: transitions tries
# them top to bottom and takes the first whose guards all pass.

_E = ExtensionStatus
EXTENSION_TRANSITIONS: tuple[TransitionRow, ...] = (
    TransitionRow("accept", (_E.PENDING,), _E.ACCEPTED, ("within_window",)),
    TransitionRow("reject", (_E.PENDING,), _E.REJECTED, ("within_window",)),
    TransitionRow(
        "time_out",
        (_E.PENDING,),
        _E.ACCEPTED,
        ("is_due", "auto_approve_policy", "mitra_reachable"),
    ),
    TransitionRow("time_out", (_E.PENDING,), _E.TIMEOUT, ("is_due",)),
    # The session ends under a pending request: it is rejected, deadline or not.
    TransitionRow("cancel", (_E.PENDING,), _E.REJECTED),
)

_S = SessionStatus
SESSION_TRANSITIONS: tuple[TransitionRow, ...] = (
    TransitionRow("pause", (_S.ACTIVE, _S.CLOSING), _S.EXTENDING),
    TransitionRow("resume", (_S.EXTENDING,), _S.ACTIVE),
    TransitionRow("close", (_S.EXTENDING,), _S.CLOSING),
    TransitionRow("expire", (_S.ACTIVE,), _S.CLOSING),
    TransitionRow("end", (_S.ACTIVE, _S.CLOSING, _S.EXTENDING), _S.ENDED),
)


class InvalidMove(Exception):
    """The machine has no such move from the current state (or a guard said no)."""

    def __init__(self, machine: str, trigger: str, state: str, *, guarded: bool) -> None:
        why = "guards refused" if guarded else "no such move"
        super().__init__(f"{machine}: {trigger} from {state}: {why}")
        self.trigger = trigger
        self.state = state
        self.guarded = guarded


@dataclass(frozen=True, slots=True)
class _Move(Generic[S]):
    """One compiled row: where it leads and the conditions (with their wanted value)."""

    dest: S
    checks: tuple[tuple[Callable[[Guard], bool], bool], ...]


class _Cursor:
    """The model ``transitions`` moves: just a state."""

    __slots__ = ("state",)

    def __init__(self, state: Enum) -> None:
        self.state = state


class StateMachine(Generic[S]):
    """A typed wrapper around one shared ``transitions.Machine``.

    ``fire(state, trigger, guard)`` returns the next state or raises
    :class:`InvalidMove`; it never mutates anything but a throw-away cursor.
    """

    def __init__(
        self,
        name: str,
        states: type[S],
        rows: Sequence[TransitionRow],
        *,
        final: Sequence[S] = (),
    ) -> None:
        self.name = name
        self.states = states
        self.rows = tuple(rows)
        self.final = frozenset(final)
        state_specs: list[dict[str, Any]] = [{"name": s, "final": s in self.final} for s in states]
        self._machine = Machine(
            model=None,
            states=state_specs,
            initial=next(iter(states)),
            transitions=[
                {
                    "trigger": row.trigger,
                    "source": [states(src) for src in row.source],
                    "dest": states(row.dest),
                    "conditions": [GUARDS[c] for c in row.conditions],
                }
                for row in rows
            ],
            auto_transitions=False,
            send_event=False,
            name=name,
        )
        self._events = {name: self._machine.events[name] for name in self.triggers}
        self._moves = self._compile()

    def _compile(self) -> dict[tuple[S, str], tuple[_Move[S], ...]]:
        """The Machine's own transitions as a lookup: (state, trigger) -> moves in order.

        ``transitions`` spends most of a trigger on bookkeeping this machine
        does not use (event data, enter/exit callbacks, logging); with no
        callbacks declared, trying the moves of (state, trigger) in order and
        taking the first whose conditions all hold is exactly what it does.
        """
        machine = self._machine
        hooks = (
            machine.prepare_event,
            machine.before_state_change,
            machine.after_state_change,
            machine.finalize_event,
            machine.on_exception,
        )
        if any(hooks):  # pragma: no cover - a guard against a future edit of the table
            raise TypeError("the compiled fast path supports no machine callbacks")
        moves: dict[tuple[S, str], tuple[_Move[S], ...]] = {}
        for trigger, event in self._events.items():
            for source, transitions in event.transitions.items():
                compiled = []
                for t in transitions:
                    if t.prepare or t.before or t.after:  # pragma: no cover
                        raise TypeError("the compiled fast path supports no callbacks")
                    checks: list[tuple[Callable[[Guard], bool], bool]] = []
                    for c in t.conditions:
                        if not callable(c.func):  # pragma: no cover - guards are functions
                            raise TypeError(f"condition {c.func!r} is not a function")
                        checks.append((cast(Callable[[Guard], bool], c.func), bool(c.target)))
                    compiled.append(_Move(self.states[str(t.dest)], tuple(checks)))
                moves[(self.states[source], trigger)] = tuple(compiled)
        return moves

    @property
    def triggers(self) -> tuple[str, ...]:
        """Trigger names in table order, without repeats."""
        return tuple(dict.fromkeys(row.trigger for row in self.rows))

    def can_fire(self, state: S, trigger: str) -> bool:
        """Whether ``trigger`` has any row from ``state`` (guards not evaluated)."""
        return any(trigger == row.trigger and state.value in row.source for row in self.rows)

    def fire(self, state: S, trigger: str, guard: Guard) -> S:
        """The state ``trigger`` leads to from ``state`` under ``guard``."""
        moves = self._moves.get((state, trigger))
        if moves is None:
            if trigger not in self._events:
                raise KeyError(trigger)
            raise InvalidMove(self.name, trigger, state.value, guarded=False)
        for move in moves:
            for condition, target in move.checks:
                if bool(condition(guard)) is not target:
                    break
            else:
                return move.dest
        raise InvalidMove(self.name, trigger, state.value, guarded=True)

    def fire_via_transitions(self, state: S, trigger: str, guard: Guard) -> S:
        """:meth:`fire` done by ``transitions`` itself (the reference the fast path is
        tested against)."""
        cursor = _Cursor(state)
        try:
            moved = self._events[trigger].trigger(cursor, guard)
        except MachineError:
            raise InvalidMove(self.name, trigger, state.value, guarded=False) from None
        if not moved:
            raise InvalidMove(self.name, trigger, state.value, guarded=True)
        result: S = cursor.state  # type: ignore[assignment]
        return result

    @property
    def machine(self) -> Machine:
        """The underlying ``transitions.Machine`` (for diagrams and inspection)."""
        return self._machine


EXTENSION_MACHINE: StateMachine[ExtensionStatus] = StateMachine(
    "extension",
    ExtensionStatus,
    EXTENSION_TRANSITIONS,
    final=(_E.ACCEPTED, _E.REJECTED, _E.TIMEOUT),
)
SESSION_MACHINE: StateMachine[SessionStatus] = StateMachine(
    "session", SessionStatus, SESSION_TRANSITIONS, final=(_S.ENDED,)
)
