"""Dependencies that hang, refuse or fail once, for the race machine.

:class:`Faults` is the switchboard: ``arm(dependency, mode)`` makes the next
calls of ``"sockets"``, ``"push"`` or ``"presence"`` hang (never answer),
refuse (a connection error) or fail once (a retryable delivery error, then
work); ``heal()`` ends them.  The faulty adapters below are the simulator's
recording fakes with the switchboard in front.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from ..adapters.clock import VirtualClock
from ..adapters.memory import MemoryPresence
from ..errors import DeliveryError
from ..model import JSONValue, Participant, PushMessage
from ..simulator.simulation import ClockedPush, ClockedSockets, StampedDelivery

__all__ = ["DEPENDENCIES", "MODES", "Faults", "FaultyPresence", "FaultyPush", "FaultySockets"]

DEPENDENCIES = ("sockets", "push", "presence")
MODES = ("hang", "refuse", "fail_once")


class Faults:
    """What each dependency does next, and which ones misbehaved lately."""

    def __init__(self) -> None:
        self.armed: dict[str, str] = {}
        #: dependencies that hung, refused or failed since :meth:`forget`
        self.tripped: set[str] = set()

    def arm(self, dependency: str, mode: str) -> None:
        if dependency not in DEPENDENCIES or mode not in MODES:
            raise ValueError(f"unknown fault {dependency}/{mode}")
        self.armed[dependency] = mode

    def heal(self) -> None:
        self.armed.clear()

    def forget(self) -> None:
        self.tripped.clear()

    async def before(self, dependency: str) -> None:
        """Called before every call of ``dependency``: misbehave if armed."""
        mode = self.armed.get(dependency)
        if mode is None:
            return
        self.tripped.add(dependency)
        if mode == "fail_once":
            del self.armed[dependency]
            raise DeliveryError(f"{dependency}: injected failure", retryable=True)
        if mode == "refuse":
            raise ConnectionRefusedError(f"{dependency}: injected refusal")
        await asyncio.Event().wait()  # hang: only a timeout ends this call


class FaultySockets(ClockedSockets):
    def __init__(self, clock: VirtualClock, log: list[StampedDelivery], faults: Faults) -> None:
        super().__init__(clock, log)
        self.faults = faults

    async def send(
        self, session_id: str, participant: Participant, message: Mapping[str, JSONValue]
    ) -> bool:
        await self.faults.before("sockets")
        return await super().send(session_id, participant, message)

    async def is_connected(self, participant: Participant, user_id: str) -> bool:
        await self.faults.before("presence")
        return await super().is_connected(participant, user_id)


class FaultyPush(ClockedPush):
    def __init__(self, clock: VirtualClock, log: list[StampedDelivery], faults: Faults) -> None:
        super().__init__(clock, log)
        self.faults = faults

    async def send(self, participant: Participant, user_id: str, message: PushMessage) -> None:
        await self.faults.before("push")
        await super().send(participant, user_id, message)


class FaultyPresence(MemoryPresence):
    def __init__(self, faults: Faults) -> None:
        super().__init__()
        self.faults = faults

    async def is_online(self, mitra_id: str) -> bool:
        await self.faults.before("presence")
        return await super().is_online(mitra_id)
