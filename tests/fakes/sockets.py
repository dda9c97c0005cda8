"""A socket double with Starlette's ``send_json`` shape, for hub tests."""

from __future__ import annotations

from typing import Any

__all__ = ["BrokenSocket", "RecordingSocket"]


class RecordingSocket:
    """Keeps every JSON frame sent to it."""

    def __init__(self) -> None:
        self.frames: list[Any] = []

    async def send_json(self, data: Any) -> None:
        self.frames.append(data)


class BrokenSocket:
    """A socket whose client went away: every send raises, as Starlette's does."""

    def __init__(self) -> None:
        self.attempts = 0

    async def send_json(self, data: Any) -> None:
        self.attempts += 1
        raise RuntimeError('Cannot call "send" once a close message has been sent.')
