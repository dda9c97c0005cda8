"""The three state machines of the flow (extension, session, payment), run by ``transitions``.

Each machine is declared once, as a table of :class:`TransitionRow`, and built
once into a ``transitions.Machine`` with no model of its own.  Every move goes
through that ``Machine``: :meth:`StateMachine.fire` puts the current status on
a throw-away cursor (the model of this one call), triggers the ``Machine``'s
event on it with a :class:`Guard`, and reads the cursor's new state.  The
named guards below are the ``Machine``'s conditions.  Diagrams
(``extension-fsm diagram``) are drawn from the same tables.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import Any, Generic, TypeVar

from transitions import Machine, MachineError

from .model import (
    DEFAULT_STALE_AFTER_SECONDS,
    ExtensionStatus,
    PaymentStatus,
    SessionStatus,
    TimeoutAction,
)

__all__ = [
    "EXTENSION_MACHINE",
    "EXTENSION_TRANSITIONS",
    "PAYMENT_MACHINE",
    "PAYMENT_TRANSITIONS",
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
    """What the guards may look at; the only argument a trigger receives.

    The defaults err toward no charge: nothing is chargeable and nobody is
    reachable unless the caller says so.
    """

    now: datetime
    deadline: datetime | None = None
    timeout_action: TimeoutAction = TimeoutAction.AUTO_APPROVE
    mitra_connected: bool = False
    mitra_online: bool = False
    #: the backing payment is still ``confirmed`` and the session ``extending``
    chargeable: bool = False
    #: a timeout handled later than this past its deadline never approves
    stale_after: timedelta = timedelta(seconds=DEFAULT_STALE_AFTER_SECONDS)


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


def handled_in_time(guard: Guard) -> bool:
    """The timeout is handled within ``stale_after`` of its deadline: presence
    asked now still says something about the mitra at the deadline."""
    return guard.deadline is not None and guard.now - guard.deadline <= guard.stale_after


def payment_chargeable(guard: Guard) -> bool:
    """The payment is still ``confirmed`` and the session still ``extending``."""
    return guard.chargeable


def mitra_reachable(guard: Guard) -> bool:
    """The seed's safeguard: connected over WebSocket AND flagged online."""
    return guard.mitra_connected and guard.mitra_online


GUARDS: dict[str, Callable[[Guard], bool]] = {
    f.__name__: f
    for f in (
        within_window,
        is_due,
        auto_approve_policy,
        handled_in_time,
        payment_chargeable,
        mitra_reachable,
    )
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
        (
            "is_due",
            "auto_approve_policy",
            "handled_in_time",
            "payment_chargeable",
            "mitra_reachable",
        ),
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

_P = PaymentStatus
# The library only ever charges or fails a confirmed payment; ``pending`` ->
# ``confirmed`` is the host's payment provider, outside this flow.
PAYMENT_TRANSITIONS: tuple[TransitionRow, ...] = (
    TransitionRow("consume", (_P.CONFIRMED,), _P.CONSUMED),
    TransitionRow("fail", (_P.CONFIRMED,), _P.FAILED),
)


class InvalidMove(Exception):
    """The machine has no such move from the current state (or a guard said no)."""

    def __init__(self, machine: str, trigger: str, state: str, *, guarded: bool) -> None:
        why = "guards refused" if guarded else "no such move"
        super().__init__(f"{machine}: {trigger} from {state}: {why}")
        self.trigger = trigger
        self.state = state
        self.guarded = guarded


class _Cursor:
    """The model of one fire: just the state the ``Machine`` moves."""

    __slots__ = ("state",)

    def __init__(self, state: Enum) -> None:
        self.state = state


class StateMachine(Generic[S]):
    """A typed wrapper around one shared ``transitions.Machine``.

    ``fire(state, trigger, guard)`` triggers the ``Machine``'s event on a
    cursor holding ``state`` and returns where the ``Machine`` moved it, or
    raises :class:`InvalidMove`; nothing but the cursor changes, so one
    ``Machine`` serves every decision.
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
        self.initial: S = next(iter(states))
        state_specs: list[dict[str, Any]] = [{"name": s, "final": s in self.final} for s in states]
        self._machine = Machine(
            model=None,
            states=state_specs,
            initial=self.initial,
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

    @property
    def triggers(self) -> tuple[str, ...]:
        """Trigger names in table order, without repeats."""
        return tuple(dict.fromkeys(row.trigger for row in self.rows))

    def can_fire(self, state: S, trigger: str) -> bool:
        """Whether ``trigger`` has any row from ``state`` (guards not evaluated)."""
        return any(trigger == row.trigger and state.value in row.source for row in self.rows)

    def fire(self, state: S, trigger: str, guard: Guard) -> S:
        """The state the ``Machine`` moves ``state`` to on ``trigger`` under ``guard``.

        Raises :class:`InvalidMove` (``guarded`` when a move exists but its
        guards refused) and ``KeyError`` for a trigger the table does not have.
        """
        event = self._machine.events[trigger]
        cursor = _Cursor(state)
        try:
            moved = event.trigger(cursor, guard)
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
PAYMENT_MACHINE: StateMachine[PaymentStatus] = StateMachine(
    "payment", PaymentStatus, PAYMENT_TRANSITIONS, final=(_P.CONSUMED, _P.FAILED)
)
