"""The race machine's base: set-up, hooks for the host's store, clock and
delivery adapters, and the checks every step runs.

:class:`RaceHarness` drives a :class:`~extension_fsm.simulation.World`
(service, recording fakes behind :class:`~extension_fsm.testing.faults.Faults`,
virtual clock, host timers, periodic sweep) plus a second worker over the same
store.  Override :meth:`RaceHarness.make_store` / :meth:`RaceHarness.close_store`
to run it over your store.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Coroutine
from datetime import datetime, timedelta
from typing import Any, TypeVar

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule

from ..adapters.clock import VirtualClock
from ..adapters.memory import MemoryStore
from ..errors import ExtensionError
from ..model import (
    Extension,
    ExtensionStatus,
    FailureCause,
    Participant,
    PaymentStatus,
    TimeoutAction,
    TimeoutReason,
)
from ..ports import InspectableStore, StoreDump
from ..service import ExtensionService
from ..simulator.simulation import World, make_payment, make_session
from .faults import DEPENDENCIES, MODES, Faults, FaultyPresence, FaultyPush, FaultySockets
from .loop import VirtualTimeLoop, YieldingStore
from .strategies import PAYMENTS, SESSIONS

__all__ = ["SWEEP_INTERVAL", "RaceHarness"]

T = TypeVar("T")
SWEEP_INTERVAL = 1.0


def _by_id(rows: Any) -> dict[str, Any]:
    return {row.id: row for row in rows}


def _free_payments(dump: StoreDump, customer: str) -> list[str]:
    """The customer's usable extension payments that back no extension yet."""
    used = {e.payment_session_id for e in dump.extensions}
    return sorted(
        p.id
        for p in dump.payments
        if p.customer_id == customer
        and p.status is PaymentStatus.CONFIRMED
        and p.is_extension
        and not p.is_first_session_discount
        and p.id not in used
    )


class RaceHarness(RuleBasedStateMachine):
    """The race machine's set-up, hooks and checks; :class:`ExtensionRaces` adds the rules."""

    # ------------------------------------------------------------ hooks

    async def make_store(self) -> InspectableStore:
        """The store under test (override for another backend)."""
        return YieldingStore(MemoryStore())

    async def close_store(self, store: InspectableStore) -> None:
        """Release what :meth:`make_store` made: ``aclose()`` on the store (or on
        the store a :class:`YieldingStore` wraps), when it has one."""
        inner = store.inner if isinstance(store, YieldingStore) else store
        close = getattr(inner, "aclose", None)
        if close is not None:
            await close()

    def make_clock(self) -> VirtualClock:
        """The clock every service and timer of the run reads (a virtual one)."""
        return VirtualClock()

    async def make_world(self, store: InspectableStore, clock: VirtualClock) -> World:
        """The service, the host's timers and the delivery adapters around ``store``.
        The default puts :attr:`faults` in front of sockets, push and presence;
        override to wire adapters of your own (keep the faults in front)."""
        world = World(store, clock=clock, sweep_interval=SWEEP_INTERVAL, new_id=self.new_id)
        world.sockets = FaultySockets(world.clock, world.deliveries, self.faults)
        world.push = FaultyPush(world.clock, world.deliveries, self.faults)
        world.presence = FaultyPresence(self.faults)
        await world.restart()  # rebuild the service over the adapters just set
        return world

    async def concurrently(self, *calls: Awaitable[Any]) -> list[Any]:
        """Run ``calls`` at once (results or exceptions, in order).  A backend
        whose driver adds real threads overrides this to keep runs replayable."""
        return list(await asyncio.gather(*calls, return_exceptions=True))

    # ------------------------------------------------------------ set-up

    def __init__(self) -> None:
        super().__init__()
        self.loop = VirtualTimeLoop()
        self.store = self.run(self.make_store())
        # Ids from a counter, not uuid4: a store that lists rows by id (SQL)
        # must list them in the same order when hypothesis replays a run.
        ids = itertools.count(1)
        self.new_id = lambda: f"id{next(ids):06d}"
        self.faults = Faults()
        self.world = self.run(self.make_world(self.store, self.make_clock()))
        self.initial_expiry: dict[str, datetime] = {}
        self.ends = 0
        self.run(self._seed())
        self.worker = self._second_worker()

    async def _seed(self) -> None:
        now = self.world.clock.now()
        for sid, (customer, mitra, seconds) in SESSIONS.items():
            session = make_session(
                sid,
                customer_id=customer,
                mitra_id=mitra,
                expires_at=now + timedelta(seconds=seconds),
                customer_display_name=f"name-{customer}",
            )
            self.initial_expiry[sid] = session.expires_at
            await self.world.add_session(session)
            self.world.connect(session, Participant.CUSTOMER, on_session_socket=True)
        for pid, (customer, amount, status, is_ext, discount) in PAYMENTS.items():
            await self.world.add_payment(
                make_payment(
                    pid,
                    customer_id=customer,
                    amount=amount,
                    status=status,
                    is_extension=is_ext,
                    is_first_session_discount=discount,
                )
            )

    def _second_worker(self) -> ExtensionService:
        w = self.world
        return ExtensionService(
            w.store,
            clock=w.clock,
            config=w.config,
            sockets=w.sockets,
            presence=w.presence,
            push=w.push,
            session_timer=w.session_timer,
            new_id=self.new_id,
        )

    def teardown(self) -> None:
        try:
            self.run(self.close_store(self.store))
        finally:
            self.loop.close()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run one coroutine on this machine's private loop, then every delivery
        it started in the background (so each step's effects are all in)."""
        return self.loop.run_until_complete(self._settled(coro))

    async def _settled(self, coro: Coroutine[Any, Any, T]) -> T:
        try:
            return await coro
        finally:
            for service in (getattr(self, "world", None), getattr(self, "worker", None)):
                if isinstance(service, World):
                    await service.settle()
                elif service is not None:
                    await service.dispatcher.drain()

    # ------------------------------------------------------------ helpers

    def dump(self) -> StoreDump:
        return self.run(self.store.dump())

    def _reachable(self, mitra: str) -> bool:
        w = self.world
        return w.sockets.connected.get((Participant.MITRA, mitra), False) and w.presence.online.get(
            mitra, False
        )

    def step(self, coro: Awaitable[T], *, late_reject: str | None = None) -> T | ExtensionError:
        """Run ``coro``; check every resolution it caused against the facts of
        this moment (invariant 5 and the timeout policy), and that a refusal
        wrote nothing (invariant 9) but, for a late reject of ``late_reject``,
        that extension's uncharged timeout."""
        self.faults.forget()
        before = self.dump()
        try:
            result: T | ExtensionError = self.run(_awaited(coro))
        except ExtensionError as err:
            after = self.dump()
            if late_reject is not None and after != before:
                ext = _by_id(after.extensions)[late_reject]
                assert (ext.status, ext.reason, ext.failure_cause) == (
                    ExtensionStatus.TIMEOUT,
                    TimeoutReason.TIMEOUT,
                    FailureCause.EXTENSION_REJECTED,
                ), ext
                assert after.ledger == before.ledger, "a late reject was charged"
                return err
            assert after == before, f"{err!r} but rows were written"
            return err
        after = self.dump()
        self._check_resolutions(before, after)
        return result

    def _check_resolutions(self, before: StoreDump, after: StoreDump) -> None:
        old = _by_id(before.extensions)
        sessions = _by_id(after.sessions)
        payments = _by_id(after.payments)
        action = TimeoutAction.parse(self.world.config.timeout_action)
        for ext in after.extensions:
            prev = old.get(ext.id)
            if prev is None or prev.status is not ExtensionStatus.PENDING:
                continue
            if ext.status is ExtensionStatus.PENDING:
                continue
            flags = self._reachable(sessions[ext.session_id].mitra_id)
            # A presence check that hung or failed in this step counts as "not reachable".
            reachable = flags and "presence" not in self.faults.tripped
            late = (
                ext.responded_at - ext.expires_at
                if ext.responded_at is not None and ext.expires_at is not None
                else None
            )
            stale = late is not None and late > timedelta(seconds=self._stale_after())
            if ext.status is ExtensionStatus.ACCEPTED and ext.via_timeout:
                # Invariant 5: only under auto_approve with the mitra connected and
                # online, and never for a deadline handled past the stale bound.
                assert action is TimeoutAction.AUTO_APPROVE and flags and not stale, ext
            if ext.status is ExtensionStatus.TIMEOUT:
                assert ext.responded_at is not None and ext.responded_at >= ext.expires_at
                late_no = (ext.reason, ext.failure_cause) == (
                    TimeoutReason.TIMEOUT,
                    FailureCause.EXTENSION_REJECTED,
                )
                if action is TimeoutAction.AUTO_REJECT:
                    assert late_no, ext
                elif not late_no:  # a late reject times out as auto_reject does
                    # The host's payment status: not chargeable, whoever is reachable.
                    host_moved = payments[ext.payment_session_id].status is PaymentStatus.UNKNOWN
                    if stale:  # handled too late to trust presence: never charged
                        assert ext.reason is TimeoutReason.STALE, ext
                    else:
                        assert not reachable or host_moved
                        assert ext.reason is TimeoutReason.SAFEGUARD, ext
                    assert ext.failure_cause is FailureCause.EXTENSION_SAFEGUARD_TRIPPED, ext

    def _stale_after(self) -> float:
        """The stale-deadline bound the world's config sets."""
        return float(self.world.config.stale_after_seconds)

    def _pick_extension(self, data: st.DataObject) -> Extension | None:
        extensions = sorted(self.dump().extensions, key=lambda e: e.requested_at)
        if not extensions:
            return None
        pending = [e for e in extensions if e.status is ExtensionStatus.PENDING]
        prefer = bool(pending) and data.draw(st.booleans(), label="prefer pending")
        pool = pending if prefer else extensions
        return data.draw(st.sampled_from(pool), label="extension")

    # ------------------------------------------------------------ faults

    @rule(dependency=st.sampled_from(DEPENDENCIES), mode=st.sampled_from(MODES))
    def fault(self, dependency: str, mode: str) -> None:
        """From now on ``dependency`` hangs, refuses, or fails once."""
        self.faults.arm(dependency, mode)

    @rule()
    def heal(self) -> None:
        self.faults.heal()

    @rule(data=st.data(), accepted=st.booleans())
    def late_answer(self, data: st.DataObject, accepted: bool) -> None:
        """The right mitra answers an extension already resolved (a late or repeated answer)."""
        done = [e for e in self.dump().extensions if e.status is not ExtensionStatus.PENDING]
        if not done:
            return
        ext = data.draw(st.sampled_from(sorted(done, key=lambda e: e.id)), label="resolved")
        result = self.step(
            self.worker.respond_to_extension(
                extension_id=ext.id,
                session_id=ext.session_id,
                mitra_id=SESSIONS[ext.session_id][1],
                accepted=accepted,
            ),
            late_reject=None if accepted else ext.id,
        )
        assert isinstance(result, ExtensionError), result
        assert result.code.value in ("EXTENSION_RESOLVED", "INVALID_STATE"), result


async def _awaited(awaitable: Awaitable[T]) -> T:
    return await awaitable
