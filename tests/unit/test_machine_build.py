"""The shared ``transitions`` machine behind each :class:`StateMachine` is
built from the table and nothing else: no model of its own, no state the enum
does not have, no trigger the table does not declare."""

from __future__ import annotations

from typing import Any

import pytest

from extension_fsm.machine import EXTENSION_MACHINE, SESSION_MACHINE, StateMachine


@pytest.mark.parametrize("machine", [EXTENSION_MACHINE, SESSION_MACHINE])
def test_the_underlying_machine_is_exactly_the_table(machine: StateMachine[Any]) -> None:
    shared = machine.machine
    # Shared by every decision: it moves throw-away cursors, never a model of its own.
    assert list(shared.models) == []
    # The enum's states, in order, and no extra (such as transitions' default "initial").
    assert list(shared.states) == [s.name for s in machine.states]
    # The table's triggers only: no auto transitions (``to_<state>``) to jump anywhere.
    assert list(shared.events) == list(machine.triggers)
