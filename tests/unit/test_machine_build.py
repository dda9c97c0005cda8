"""The shared ``transitions`` machine behind each :class:`StateMachine` is
built from the table and nothing else: no model of its own, no state the enum
does not have, no trigger the table does not declare (an unknown one is a
``KeyError`` naming it).  Every fire runs this ``Machine``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from extension_fsm.machine import (
    EXTENSION_MACHINE,
    PAYMENT_MACHINE,
    SESSION_MACHINE,
    Guard,
    StateMachine,
)

MACHINES = [EXTENSION_MACHINE, SESSION_MACHINE, PAYMENT_MACHINE]


@pytest.mark.parametrize("machine", MACHINES)
def test_the_underlying_machine_is_exactly_the_table(machine: StateMachine[Any]) -> None:
    shared = machine.machine
    # Shared by every decision: it moves throw-away cursors, never a model of its own.
    assert list(shared.models) == []
    # The enum's states, in order, and no extra (such as transitions' default "initial").
    assert list(shared.states) == [s.name for s in machine.states]
    # The table's triggers only: no auto transitions (``to_<state>``) to jump anywhere.
    assert list(shared.events) == list(machine.triggers)


@pytest.mark.parametrize("machine", MACHINES)
def test_an_unknown_trigger_is_a_key_error_naming_it(machine: StateMachine[Any]) -> None:
    state = next(iter(machine.states))
    with pytest.raises(KeyError) as info:
        machine.fire(state, "no_such", Guard(now=datetime(2026, 1, 1, tzinfo=UTC)))
    assert info.value.args == ("no_such",)
