"""Clocks and schedulers: the system's on asyncio, and a virtual one for tests
and timelines whose ``advance`` fires due timers in time order."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

__all__ = ["AsyncioScheduler", "SystemClock", "VirtualClock", "VirtualTimer"]

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


class SystemClock:
    """``datetime.now(UTC)``."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class AsyncioScheduler:
    """Runs callbacks on the running event loop; one loop timer each, no threads."""

    def __init__(self, clock: SystemClock | None = None) -> None:
        self._clock = clock or SystemClock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._spawn_bound = self._spawn  # one bound method shared by every timer

    def call_at(
        self, when: datetime, callback: Callable[[], Awaitable[None]]
    ) -> asyncio.TimerHandle:
        loop = asyncio.get_running_loop()
        delay = max(0.0, (when - self._clock.now()).total_seconds())
        # The loop's own handle (it has ``cancel()``), a shared bound method, no
        # closure and no wrapper: memory per pending timer is the handle alone.
        return loop.call_later(delay, self._spawn_bound, callback)

    def _spawn(self, callback: Callable[[], Awaitable[None]]) -> None:
        task = asyncio.get_running_loop().create_task(_as_coroutine(callback))
        self._tasks.add(task)  # keep a reference until it finishes
        task.add_done_callback(self._tasks.discard)

    async def aclose(self) -> None:
        """Wait for callbacks already running."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


async def _as_coroutine(callback: Callable[[], Awaitable[None]]) -> None:
    await callback()


@dataclass(order=True)
class VirtualTimer:
    """A pending virtual timer; ``cancel()`` drops it."""

    when: datetime
    seq: int
    callback: Callable[[], Awaitable[None]] = field(compare=False)
    cancelled: bool = field(default=False, compare=False)

    def cancel(self) -> None:
        self.cancelled = True


class VirtualClock:
    """Clock and scheduler in one, on virtual time that moves only by ``advance``."""

    def __init__(self, start: datetime = EPOCH) -> None:
        self.start = start
        self._now = start
        self._heap: list[VirtualTimer] = []
        self._seq = itertools.count()

    def now(self) -> datetime:
        return self._now

    @property
    def elapsed(self) -> float:
        """Seconds since ``start``."""
        return (self._now - self.start).total_seconds()

    def call_at(self, when: datetime, callback: Callable[[], Awaitable[None]]) -> VirtualTimer:
        timer = VirtualTimer(when, next(self._seq), callback)
        heapq.heappush(self._heap, timer)
        return timer

    def next_due(self) -> datetime | None:
        """When the next live timer fires, if any."""
        while self._heap and self._heap[0].cancelled:
            heapq.heappop(self._heap)
        return self._heap[0].when if self._heap else None

    async def advance(self, seconds: float) -> None:
        """Move time forward, firing each due timer at its own moment, in order."""
        await self.advance_to(self._now + timedelta(seconds=seconds))

    async def advance_to(self, target: datetime) -> None:
        """Move time to ``target`` (never backwards), firing timers on the way."""
        while True:
            due = self.next_due()
            if due is None or due > target:
                break
            timer = heapq.heappop(self._heap)
            self._now = max(self._now, timer.when)
            await timer.callback()
        self._now = max(self._now, target)

    def cancel_all(self) -> int:
        """Drop every pending timer (a process restart); say how many."""
        live = sum(1 for t in self._heap if not t.cancelled)
        for timer in self._heap:
            timer.cancelled = True
        self._heap.clear()
        return live

    @property
    def pending_timers(self) -> int:
        return sum(1 for t in self._heap if not t.cancelled)
