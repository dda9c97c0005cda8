"""The one loop helper behind the sweep, the worker and the dispatcher: a busy
step runs again at once, an idle one waits for the interval (or a wake), a
failing one is logged and the loop goes on, ``stop`` ends it."""

from __future__ import annotations

import asyncio
import logging

import pytest

from extension_fsm.loop import run_every

BOUND = 10.0  # seconds: the most any wait below may take before the test fails
LONG = 3600.0  # an interval no test waits out


async def test_a_busy_step_runs_again_at_once_and_an_idle_one_waits() -> None:
    calls = 0
    idle = asyncio.Event()

    async def step() -> bool:
        nonlocal calls
        calls += 1
        if calls == 3:
            idle.set()
            return False
        return True

    task = asyncio.create_task(run_every("t", step, LONG))
    async with asyncio.timeout(BOUND):
        await idle.wait()  # three calls with an hour's interval: no wait between busy ones
    for _ in range(20):
        await asyncio.sleep(0)
    assert calls == 3  # the idle step waits for the interval
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled()


async def test_wake_ends_the_wait_and_stop_ends_the_loop() -> None:
    calls: list[int] = []
    stop, wake = asyncio.Event(), asyncio.Event()
    called = asyncio.Event()

    async def step() -> bool:
        calls.append(len(calls))
        called.set()
        return False

    task = asyncio.create_task(run_every("t", step, LONG, stop=stop, wake=wake))
    async with asyncio.timeout(BOUND):
        await called.wait()
        called.clear()
        wake.set()
        await called.wait()
    assert len(calls) == 2 and not wake.is_set()  # woken once, the wake consumed
    stop.set()
    async with asyncio.timeout(BOUND):
        await task  # returns by itself
    assert len(calls) == 2


async def test_a_failing_step_is_logged_and_the_loop_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls = 0
    stop = asyncio.Event()
    log = logging.getLogger("tests.loop")

    async def step() -> bool:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ConnectionError("database went away")
        stop.set()
        return False

    with caplog.at_level(logging.ERROR, logger="tests.loop"):
        async with asyncio.timeout(BOUND):
            await run_every("flaky", step, 0.001, stop=stop, log=log)
    assert calls == 3
    failed = [r for r in caplog.records if r.name == "tests.loop"]
    assert [r.getMessage() for r in failed] == ["flaky pass failed"] * 2
    assert all(r.exc_info and r.exc_info[0] is ConnectionError for r in failed)


async def test_a_stop_set_before_the_start_runs_nothing() -> None:
    stop = asyncio.Event()
    stop.set()

    async def step() -> bool:
        raise AssertionError("ran")

    async with asyncio.timeout(BOUND):
        await run_every("t", step, LONG, stop=stop)
