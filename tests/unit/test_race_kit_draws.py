"""The race machine of ``extension_fsm.testing`` makes no call before its last
draw: hypothesis ends an example in the middle of a draw when its data runs
out, and a call made before that draw would be a coroutine never awaited (an
unraisable warning, which fails whatever test the garbage collector finds it
in)."""

from __future__ import annotations

import gc
import warnings
from typing import Any

import pytest

from extension_fsm.model import ExtensionStatus
from extension_fsm.testing import ExtensionRaces
from extension_fsm.testing.strategies import PAYMENTS, SESSIONS


class _RanOut(Exception):
    """What hypothesis raises when an example's data runs out (here: any draw)."""


class _DataThatRunsOut:
    def draw(self, strategy: Any, label: str | None = None) -> Any:
        raise _RanOut(label)


@pytest.mark.parametrize("with_end", [False, True])
def test_a_race_whose_order_draw_ends_the_example_makes_no_call(with_end: bool) -> None:
    machine = ExtensionRaces()
    try:
        sid = sorted(SESSIONS)[0]
        owner = SESSIONS[sid][0]
        pid = next(
            p
            for p, (customer, _, status, *_) in sorted(PAYMENTS.items())
            if customer == owner and str(getattr(status, "value", status)) == "confirmed"
        )
        machine.request(sid, pid, 15, 0, wrong_customer=False)
        pending = [e for e in machine.dump().extensions if e.status is ExtensionStatus.PENDING]
        assert pending, "the request should have made a pending extension"
        machine._pick_extension = lambda data: pending[0]  # type: ignore[method-assign]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with pytest.raises(_RanOut, match="order"):
                machine.race(data=_DataThatRunsOut(), with_end=with_end)  # type: ignore[arg-type]
            gc.collect()
        never_awaited = [w for w in caught if "was never awaited" in str(w.message)]
        assert never_awaited == []
    finally:
        machine.teardown()
