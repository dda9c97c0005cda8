"""The extension's compare-and-set alone must stop a second resolution.

Every decision that resolves an extension writes it with "only if still
``pending``", and also moves the session and the payment with their own
compare-and-sets.  In the stores we ship, the three are checked together, so
a lost race is caught even if one check were ignored.  Here the store is a
weaker one (as a host's own adapter might be): it reads the latest committed
rows with no snapshot, and its session and payment updates always succeed.
Only the extension's compare-and-set can see the lost race, and the service
must still resolve each extension once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from extension_fsm import ExtensionStatus, Participant, PaymentSession, Session
from extension_fsm.adapters.memory import MemoryStore, MemoryUnitOfWork
from extension_fsm.invariants import check_invariants
from extension_fsm.simulator import World
from tests.unit._support import new_world


class _BlindSessions:
    """Reads the latest committed row; ``update`` never checks the status."""

    def __init__(self, uow: MemoryUnitOfWork) -> None:
        self._uow = uow

    async def get(self, session_id: str) -> Session | None:
        staged = self._uow.staged_sessions
        return staged.get(session_id) or self._uow.store.sessions.get(session_id)

    async def update(self, session: Session, expected_status: str) -> bool:
        self._uow.staged_sessions[session.id] = session
        return True


class _BlindPayments:
    """Like ``_BlindSessions``; the first ``get`` after ``hold`` waits for it."""

    def __init__(self, uow: MemoryUnitOfWork, store: WeakStore) -> None:
        self._uow = uow
        self._store = store

    async def get(self, payment_id: str) -> PaymentSession | None:
        await self._store.wait_if_held()
        staged = self._uow.staged_payments
        return staged.get(payment_id) or self._uow.store.payments.get(payment_id)

    async def update(self, payment: PaymentSession, expected_status: str) -> bool:
        self._uow.staged_payments[payment.id] = payment
        return True


class _ReadCommittedUnitOfWork(MemoryUnitOfWork):
    """No snapshot and no read validation at commit: READ COMMITTED, no locks."""

    def read(self, table: str, key: str) -> None:
        return None


class WeakStore(MemoryStore):
    """A memory store where only the extension's compare-and-set guards a race.

    ``hold()`` makes the next unit of work that reads a payment stop there
    (after it has read the extension as pending) until ``release()``.
    """

    def __init__(self) -> None:
        super().__init__()
        self._hold: asyncio.Event | None = None
        self.held = asyncio.Event()

    def unit_of_work(self) -> MemoryUnitOfWork:
        uow = _ReadCommittedUnitOfWork(self)
        uow.sessions = _BlindSessions(uow)  # type: ignore[assignment]
        uow.payments = _BlindPayments(uow, self)  # type: ignore[assignment]
        return uow

    def hold(self) -> asyncio.Event:
        self._hold = asyncio.Event()
        return self._hold

    async def wait_if_held(self) -> None:
        gate, self._hold = self._hold, None
        if gate is not None:
            self.held.set()
            await gate.wait()


async def _request(world: World) -> str:
    ext = await world.service.request_extension(
        session_id="s1",
        customer_id="c1",
        duration_minutes=30,
        price=15000,
        extension_payment_session_id="p1",
    )
    return ext.id


def _answer(accepted: bool) -> Callable[[World, str], Awaitable[object]]:
    async def answer(world: World, ext_id: str) -> object:
        return await world.service.respond_to_extension(
            extension_id=ext_id, session_id="s1", mitra_id="m1", accepted=accepted
        )

    return answer


async def _sweep(world: World, ext_id: str) -> object:
    return await world.service.sweep_due()


async def _end(world: World, ext_id: str) -> object:
    return await world.service.end_session("s1")


LATE = {"sweep": _sweep, "end": _end}
FIRST = {"accept": _answer(True), "reject": _answer(False), "sweep": _sweep, "end": _end}
# (an answer comes before the deadline, so it never races a sweep: it would be refused)
PAIRS = [
    (late, first)
    for late in LATE
    for first in FIRST
    if (late, first) not in {("sweep", "accept"), ("sweep", "reject")}
]


@pytest.mark.parametrize(("late", "first"), PAIRS)
async def test_a_decision_on_a_stale_pending_row_does_not_resolve_it_again(
    late: str, first: str
) -> None:
    """``late`` reads the extension as pending and stops; ``first`` resolves
    it and commits; ``late`` goes on with its stale decision.  Its write must
    lose on the extension's compare-and-set and re-run on fresh rows."""
    store = WeakStore()
    world, session = await new_world(store=store, use_timers=False)
    world.connect(session, Participant.MITRA, connected=True, online=True)  # auto-approve
    ext_id = await _request(world)
    if "sweep" in (late, first):
        await world.clock.advance(60)  # past the deadline (the answers come before it)

    gate = store.hold()
    stale = asyncio.create_task(LATE[late](world, ext_id))
    await store.held.wait()  # ``late`` has read the extension as pending
    await FIRST[first](world, ext_id)
    gate.set()
    await stale

    dump = await store.dump()
    (ext,) = dump.extensions
    assert ext.status is not ExtensionStatus.PENDING
    resolutions = [r for r in dump.log if r.entity == "extension" and r.from_status == "pending"]
    assert len(resolutions) == 1, resolutions
    assert len(dump.ledger) == (1 if ext.status is ExtensionStatus.ACCEPTED else 0)
    assert check_invariants(dump, now=world.clock.now()) == []
