"""Clocks and schedulers, ``TimeoutAction.parse`` and ``ExtensionError.to_dict``."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from extension_fsm import ErrorCode, ExtensionError, TimeoutAction
from extension_fsm.adapters.clock import EPOCH, AsyncioScheduler, SystemClock, VirtualClock

# ------------------------------------------------------------ VirtualClock


async def test_virtual_timers_fire_in_time_order_each_at_its_own_moment() -> None:
    clock = VirtualClock()
    fired: list[tuple[str, float]] = []

    def at(seconds: float, name: str) -> None:
        async def callback() -> None:
            fired.append((name, clock.elapsed))

        clock.call_at(EPOCH + timedelta(seconds=seconds), callback)

    at(5, "c")
    at(1, "a")
    at(3, "b")
    at(3, "b2")  # same moment: in the order scheduled
    at(9, "late")
    await clock.advance(5)
    assert fired == [("a", 1), ("b", 3), ("b2", 3), ("c", 5)]
    assert clock.now() == EPOCH + timedelta(seconds=5)
    assert clock.pending_timers == 1 and clock.next_due() == EPOCH + timedelta(seconds=9)


async def test_a_timer_scheduled_by_a_timer_inside_the_window_fires_too() -> None:
    clock = VirtualClock()
    fired: list[float] = []

    async def second() -> None:
        fired.append(clock.elapsed)

    async def first() -> None:
        fired.append(clock.elapsed)
        clock.call_at(clock.now() + timedelta(seconds=2), second)
        clock.call_at(clock.now() - timedelta(seconds=5), second)  # in the past: now

    clock.call_at(EPOCH + timedelta(seconds=1), first)
    await clock.advance(10)
    assert fired == [1, 1, 3]
    assert clock.elapsed == 10


async def test_time_never_goes_backwards() -> None:
    clock = VirtualClock()
    await clock.advance(10)
    await clock.advance_to(EPOCH)
    assert clock.elapsed == 10
    await clock.advance(0)
    assert clock.elapsed == 10


async def test_cancel_drops_one_timer_and_cancel_all_drops_every_timer() -> None:
    clock = VirtualClock()
    fired: list[str] = []

    def make(name: str) -> Callable[[], Awaitable[None]]:
        async def callback() -> None:
            fired.append(name)

        return callback

    keep = clock.call_at(EPOCH + timedelta(seconds=1), make("keep"))
    drop = clock.call_at(EPOCH + timedelta(seconds=2), make("drop"))
    drop.cancel()
    assert clock.pending_timers == 1
    await clock.advance(3)
    assert fired == ["keep"]
    assert not keep.cancelled
    for s in (4, 5, 6):
        clock.call_at(EPOCH + timedelta(seconds=s), make(f"t{s}"))
    clock.call_at(EPOCH + timedelta(seconds=7), make("x")).cancel()
    assert clock.cancel_all() == 3  # live ones only: a restart
    assert clock.pending_timers == 0 and clock.next_due() is None
    await clock.advance(10)
    assert fired == ["keep"]


def test_the_virtual_clock_starts_where_told() -> None:
    start = datetime(2030, 5, 1, tzinfo=UTC)
    clock = VirtualClock(start)
    assert clock.now() == start and clock.elapsed == 0


def test_the_system_clock_is_aware_utc() -> None:
    now = SystemClock().now()
    assert now.tzinfo is UTC


# ---------------------------------------------------------- AsyncioScheduler


async def test_asyncio_scheduler_fires_on_the_running_loop() -> None:
    scheduler = AsyncioScheduler()
    done = asyncio.Event()
    calls: list[str] = []

    async def callback() -> None:
        calls.append("fired")
        done.set()

    scheduler.call_at(SystemClock().now(), callback)  # delay 0
    scheduler.call_at(SystemClock().now() - timedelta(hours=1), callback)  # past: at once
    await asyncio.wait_for(done.wait(), timeout=5)
    await asyncio.sleep(0)
    await scheduler.aclose()
    assert calls == ["fired", "fired"]


async def test_asyncio_scheduler_cancel_before_it_fires() -> None:
    scheduler = AsyncioScheduler()
    calls: list[str] = []

    async def callback() -> None:
        calls.append("fired")

    handle = scheduler.call_at(SystemClock().now(), callback)
    handle.cancel()
    marker = scheduler.call_at(SystemClock().now(), callback)  # proves the loop ran
    for _ in range(20):
        await asyncio.sleep(0)
    await scheduler.aclose()
    assert calls == ["fired"]
    marker.cancel()  # after firing: harmless


async def test_asyncio_scheduler_aclose_waits_for_running_callbacks() -> None:
    scheduler = AsyncioScheduler()
    release = asyncio.Event()
    finished: list[bool] = []

    async def slow() -> None:
        await release.wait()
        finished.append(True)

    scheduler.call_at(SystemClock().now(), slow)
    for _ in range(5):
        await asyncio.sleep(0)
    closing = asyncio.create_task(scheduler.aclose())
    await asyncio.sleep(0)
    assert not closing.done()
    release.set()
    await closing
    assert finished == [True]


# ------------------------------------------------------------- TimeoutAction


@pytest.mark.parametrize(
    ("value", "want"),
    [
        ("auto_approve", TimeoutAction.AUTO_APPROVE),
        ("auto_reject", TimeoutAction.AUTO_REJECT),
        (TimeoutAction.AUTO_REJECT, TimeoutAction.AUTO_REJECT),
        ("AUTO_REJECT", TimeoutAction.AUTO_APPROVE),
        (" auto_reject", TimeoutAction.AUTO_APPROVE),
        ("", TimeoutAction.AUTO_APPROVE),
        (None, TimeoutAction.AUTO_APPROVE),
        (1, TimeoutAction.AUTO_APPROVE),
    ],
)
def test_timeout_action_parse_defaults_unknown_values_to_auto_approve(
    value: object, want: TimeoutAction
) -> None:
    assert TimeoutAction.parse(value) is want


# ------------------------------------------------------------ ExtensionError


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("SESSION_NOT_ACTIVE", 409),
        ("VALIDATION_ERROR", 422),
        ("NOT_FOUND", 404),
        ("FORBIDDEN", 403),
        ("INVALID_STATE", 409),
        ("FIRST_SESSION_DISCOUNT_NOT_ALLOWED", 400),
        ("EXTENSION_RESOLVED", 409),
        ("EXTENSION_PENDING", 409),
        ("PAYMENT_IN_USE", 409),
        ("CONFLICT", 409),
        ("STORAGE_UNAVAILABLE", 503),
        ("STORAGE_ERROR", 500),
    ],
)
def test_every_code_has_its_status_and_a_host_body(code: str, status: int) -> None:
    err = ExtensionError(ErrorCode(code), "why")
    assert err.status_code == status == ErrorCode(code).status_code
    assert err.to_dict() == {"code": code, "message": "why", "status_code": status}
    assert str(err) == "why" and repr(err) == f"ExtensionError({code!r}, {status}, 'why')"
    assert len(ErrorCode) == 12


@pytest.mark.parametrize("page", ["README.md", "docs/host-guide.md", "docs/differences.md"])
def test_the_docs_name_every_key_of_to_dict(page: str) -> None:
    """Where a page says what ``to_dict()`` gives, it names every key it gives."""
    text = (Path(__file__).resolve().parents[2] / page).read_text()
    said = re.findall(r"to_dict\(\)`([^)]*)", text)
    keys = ExtensionError(ErrorCode.CONFLICT, "why").to_dict().keys()
    assert said and all(key in words for words in said for key in keys)
