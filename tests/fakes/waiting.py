"""Wait on a condition (bounded), instead of asserting after a fixed sleep."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

__all__ = ["eventually"]


async def eventually(
    condition: Callable[[], Awaitable[bool]], *, within: float = 15.0, step: float = 0.05
) -> None:
    """Return once ``condition()`` is true; fail if it never becomes true within
    ``within`` seconds (a generous bound against a hang, not a speed check)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await condition():
        if loop.time() > deadline:
            raise AssertionError(f"condition still false after {within}s")
        await asyncio.sleep(step)
