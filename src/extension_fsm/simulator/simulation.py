"""The timeline harness shared by the CLI and the tests.

A :class:`World` wires an :class:`~extension_fsm.ExtensionService` to a store
(in memory unless given one), recording delivery fakes and a
:class:`~extension_fsm.adapters.clock.VirtualClock`, and plays the host's
part: the session's own expiry and closure grace timers run on the same
virtual clock, and a periodic sweep stands in for ``run_sweeper``.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from ..adapters.clock import VirtualClock
from ..adapters.config import StaticConfig
from ..adapters.memory import (
    Delivery,
    MemoryPaymentEvents,
    MemoryPresence,
    MemoryPush,
    MemorySessionTimer,
    MemorySockets,
    MemoryStore,
)
from ..core import Change
from ..errors import ConcurrencyConflict
from ..machine import SESSION_MACHINE, Guard, InvalidMove
from ..model import (
    ACTOR_HOST,
    JSONValue,
    Participant,
    PaymentSession,
    PaymentStatus,
    PushMessage,
    Session,
    SessionStatus,
    TransitionRecord,
)
from ..outbox import DispatchReport
from ..ports import InspectableStore, TimerHandle
from ..service import ExtensionService

__all__ = [
    "ClockedPush",
    "ClockedSockets",
    "HostSessionTimer",
    "StampedDelivery",
    "World",
    "make_payment",
    "make_session",
]


@dataclass(frozen=True, slots=True)
class StampedDelivery:
    """A delivery attempt and the virtual moment it happened."""

    at: datetime
    delivery: Delivery


class ClockedSockets(MemorySockets):
    """:class:`MemorySockets` that also logs each send, stamped, in a shared list."""

    def __init__(self, clock: VirtualClock, log: list[StampedDelivery]) -> None:
        super().__init__()
        self._clock = clock
        self.log = log

    async def send(
        self, session_id: str, participant: Participant, message: Mapping[str, JSONValue]
    ) -> bool:
        taken = await super().send(session_id, participant, message)
        self.log.append(StampedDelivery(self._clock.now(), self.sent[-1]))
        return taken


class ClockedPush(MemoryPush):
    """:class:`MemoryPush` that also logs each push that went out, stamped."""

    def __init__(self, clock: VirtualClock, log: list[StampedDelivery]) -> None:
        super().__init__()
        self._clock = clock
        self.log = log

    async def send(self, participant: Participant, user_id: str, message: PushMessage) -> None:
        await super().send(participant, user_id, message)
        self.log.append(StampedDelivery(self._clock.now(), self.sent[-1]))


class HostSessionTimer(MemorySessionTimer):
    """The host's session timers on the virtual clock.

    Expiry of an ``active`` session moves it to ``closing`` and starts the
    grace period; the end of grace ends the session through the service.  A
    session that is ``extending`` when either fires is paused: nothing
    happens, and the extension's outcome re-arms what is needed.
    """

    def __init__(self, world: World) -> None:
        super().__init__()
        self._world = world
        self._expiry: dict[str, TimerHandle] = {}
        self._grace: dict[str, TimerHandle] = {}

    def arm_expiry(self, session_id: str, at: datetime) -> None:
        old = self._expiry.pop(session_id, None)
        if old is not None:
            old.cancel()

        async def fire() -> None:
            await self._world.expire_session(session_id)

        self._expiry[session_id] = self._world.call_at(at, fire)

    def arm_grace(self, session_id: str, at: datetime) -> None:
        old = self._grace.pop(session_id, None)
        if old is not None:
            old.cancel()

        async def fire() -> None:
            session = await self._world.session(session_id)
            if session is not None and session.status is SessionStatus.CLOSING:
                await self._world.service.end_session(session_id)

        self._grace[session_id] = self._world.call_at(at, fire)

    async def expiry_extended(self, session_id: str, expires_at: datetime, *, seq: int) -> None:
        await super().expiry_extended(session_id, expires_at, seq=seq)
        self.arm_expiry(session_id, expires_at)

    async def start_closure_grace(self, session_id: str, deadline: datetime, *, seq: int) -> None:
        await super().start_closure_grace(session_id, deadline, seq=seq)
        self.arm_grace(session_id, deadline)

    async def clear_closure_grace(self, session_id: str, *, seq: int) -> None:
        await super().clear_closure_grace(session_id, seq=seq)
        handle = self._grace.pop(session_id, None)
        if handle is not None:
            handle.cancel()


def _random_uuid() -> str:
    return str(uuid.uuid4())


class World:
    """A service, its fakes and a virtual clock; ``restart()`` loses every timer."""

    def __init__(
        self,
        store: InspectableStore | None = None,
        *,
        clock: VirtualClock | None = None,
        sweep_interval: float | None = 1.0,
        use_timers: bool = True,
        new_id: Callable[[], str] | None = None,
        sessions: Collection[str] | None = None,
    ) -> None:
        self.store: InspectableStore = store if store is not None else MemoryStore()
        #: the sessions this world plays (None: every session in the store); a
        #: restart re-arms the host's timers of these only, so a database shared
        #: with other timelines is neither read whole nor touched
        self.sessions = None if sessions is None else list(sessions)
        self.clock = clock or VirtualClock()
        self.config = StaticConfig()
        #: every socket send and push, in order, with its virtual time
        self.deliveries: list[StampedDelivery] = []
        self.sockets: MemorySockets = ClockedSockets(self.clock, self.deliveries)
        self.presence = MemoryPresence()
        self.push: MemoryPush = ClockedPush(self.clock, self.deliveries)
        #: the payment events the host was told, in order
        self.payment_events = MemoryPaymentEvents()
        self.new_id = new_id
        self.sweep_interval = sweep_interval
        self.use_timers = use_timers
        self.restarts = 0
        #: how many fired timers may have written rows: every timer but a periodic
        #: sweep that found nothing due and nothing to deliver (a timeline player
        #: reads the store after a timer only when this moved)
        self.activity = 0
        self.host_log: list[TransitionRecord] = []
        self._build()

    def _build(self) -> None:
        self.session_timer = HostSessionTimer(self)
        self.service = ExtensionService(
            self.store,
            clock=self.clock,
            config=self.config,
            sockets=self.sockets,
            presence=self.presence,
            push=self.push,
            session_timer=self.session_timer,
            payment_events=self.payment_events,
            scheduler=self if self.use_timers else None,
            new_id=self.new_id or _random_uuid,
        )
        if self.sweep_interval:
            self._arm_sweep()

    def _arm_sweep(self) -> None:
        assert self.sweep_interval
        at = self.clock.now() + timedelta(seconds=self.sweep_interval)

        async def tick() -> None:
            busy = True
            try:
                resolved = await self.service.sweep_due()
                report = await self.service.dispatcher.dispatch_due()
                busy = bool(resolved) or report != DispatchReport()
            finally:  # like run_sweeper: a failed pass must not stop the sweeping
                self._arm_sweep()
                await self.settle()
                if busy:
                    self.activity += 1

        self.clock.call_at(at, tick)

    def call_at(self, when: datetime, callback: Callable[[], Awaitable[None]]) -> TimerHandle:
        """The service's scheduler and the host's timers: ``callback`` at ``when``
        on the virtual clock, then every delivery it started, before time moves on."""

        async def fire() -> None:
            self.activity += 1
            try:
                await callback()
            finally:
                await self.settle()

        return self.clock.call_at(when, fire)

    async def settle(self) -> None:
        """Wait for the deliveries the service started in the background."""
        await self.service.dispatcher.drain()

    async def restart(self) -> None:
        """A crash and restart: every in-process timer is gone; the service and the
        host's timers are rebuilt from storage alone."""
        self.clock.cancel_all()
        self.restarts += 1
        self._build()
        for session_id in await self.session_ids():
            session = await self.session(session_id)
            if session is None or session.status is SessionStatus.ENDED:
                continue
            self.session_timer.arm_expiry(session_id, session.expires_at)
            if session.closure_deadline is not None:
                self.session_timer.arm_grace(session_id, session.closure_deadline)

    # ----------------------------------------------------------- host side

    async def session_ids(self) -> list[str]:
        """The sessions this world plays that the store holds."""
        return [s.id for s in (await self.store.dump(session_ids=self.sessions)).sessions]

    async def session(self, session_id: str) -> Session | None:
        return await self.service.session(session_id)

    async def add_session(self, session: Session) -> None:
        """Seed a session (host-owned) and arm its expiry timer."""
        await self.store.seed_session(session)
        self.session_timer.arm_expiry(session.id, session.expires_at)

    async def add_payment(self, payment: PaymentSession) -> None:
        """Seed a payment session (host-owned)."""
        await self.store.seed_payment(payment)

    async def expire_session(self, session_id: str) -> None:
        """The host's expiry: ``active`` → ``closing`` through the session machine."""
        for _ in range(5):
            async with self.store.unit_of_work() as uow:
                session = (await uow.snapshots.for_request(session_id, None)).session
                if session is None or self.clock.now() < session.expires_at:
                    return
                try:
                    status = SESSION_MACHINE.fire(session.status, "expire", Guard(self.clock.now()))
                except InvalidMove:
                    return  # extending (paused), closing or ended: nothing to do
                deadline = self.clock.now() + timedelta(seconds=self.config.grace_seconds)
                moved = replace(session, status=status, closure_deadline=deadline)
                record = TransitionRecord(
                    "session",
                    session_id,
                    session.status.value,
                    status.value,
                    "expire",
                    ACTOR_HOST,
                    self.clock.now(),
                )
                # The host's own write, through the port's decision write: the
                # session moved (compare-and-set on its status) and logged.
                try:
                    await uow.write_batch(
                        None, Change(session.status.value, moved), None, None, [record], []
                    )
                    await uow.commit()
                except ConcurrencyConflict:
                    continue  # another writer moved it first: read again
            self.session_timer.arm_grace(session_id, deadline)
            return

    def connect(
        self,
        session: Session,
        participant: Participant,
        *,
        on_session_socket: bool | None = None,
        connected: bool | None = None,
        online: bool | None = None,
    ) -> None:
        """Set a participant's socket / presence flags."""
        user = session.customer_id if participant is Participant.CUSTOMER else session.mitra_id
        if on_session_socket is not None:
            self.sockets.on_session[(session.id, participant)] = on_session_socket
        if connected is not None:
            self.sockets.connected[(participant, user)] = connected
        if online is not None:
            self.presence.online[user] = online


def make_session(
    session_id: str = "s1",
    *,
    customer_id: str = "c1",
    mitra_id: str = "m1",
    status: SessionStatus = SessionStatus.ACTIVE,
    expires_at: datetime,
    customer_display_name: str = "Rina",
) -> Session:
    """A session row with sensible defaults."""
    return Session(
        id=session_id,
        customer_id=customer_id,
        mitra_id=mitra_id,
        status=status,
        expires_at=expires_at,
        customer_display_name=customer_display_name,
    )


def make_payment(
    payment_id: str = "p1",
    *,
    customer_id: str = "c1",
    amount: int = 15000,
    status: PaymentStatus = PaymentStatus.CONFIRMED,
    is_extension: bool = True,
    is_first_session_discount: bool = False,
) -> PaymentSession:
    """A payment-session row with sensible defaults."""
    return PaymentSession(
        id=payment_id,
        customer_id=customer_id,
        status=status,
        amount=amount,
        is_extension=is_extension,
        is_first_session_discount=is_first_session_discount,
    )
