"""Races over the optimistic memory store, with ``asyncio.gather``.

The store is wrapped in :class:`YieldingStore` so that units of work really
interleave (the bare memory store never suspends).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from datetime import timedelta
from typing import Any

import pytest

from extension_fsm import (
    ExtensionError,
    ExtensionService,
    ExtensionStatus,
    FailureCause,
    Participant,
)
from extension_fsm.adapters.memory import MemoryStore
from extension_fsm.invariants import check_invariants
from extension_fsm.ports import InspectableStore
from extension_fsm.simulator import World, make_payment, make_session
from extension_fsm.testing.loop import YieldingStore
from tests.unit._support import new_world


async def _racy_world() -> tuple[World, MemoryStore]:
    memory = MemoryStore()
    world, session = await new_world(store=YieldingStore(memory), use_timers=False)
    world.connect(session, Participant.MITRA, connected=True, online=True)
    return world, memory


def _worker(world: World, store: InspectableStore | None = None) -> ExtensionService:
    """Another process's service over the same storage (no in-process timers)."""
    return ExtensionService(
        store or world.store,
        clock=world.clock,
        config=world.config,
        sockets=world.sockets,
        presence=world.presence,
        push=world.push,
        session_timer=world.session_timer,
    )


async def _gather(*calls: Awaitable[Any]) -> list[Any]:
    return list(await asyncio.gather(*calls, return_exceptions=True))


async def _check(world: World, initial_expiry: dict[str, Any]) -> None:
    dump = await world.store.dump()
    assert check_invariants(dump, now=world.clock.now(), initial_expiry=initial_expiry) == []


async def _request(world: World, payment: str = "p1", session: str = "s1") -> Any:
    return await world.service.request_extension(
        session_id=session,
        customer_id="c1",
        duration_minutes=30,
        price=15000,
        extension_payment_session_id=payment,
    )


@pytest.mark.parametrize("order", range(4))
async def test_accept_reject_and_two_sweeps_before_the_deadline_one_outcome(order: int) -> None:
    world, _ = await _racy_world()
    start = (await world.session("s1")).expires_at  # type: ignore[union-attr]
    ext = await _request(world)
    await world.clock.advance(5)
    calls: list[Awaitable[Any]] = [
        world.service.respond_to_extension(
            extension_id=ext.id, session_id="s1", mitra_id="m1", accepted=True
        ),
        _worker(world).respond_to_extension(
            extension_id=ext.id, session_id="s1", mitra_id="m1", accepted=False
        ),
        world.service.sweep_due(),
        _worker(world).sweep_due(),
    ]
    calls = calls[order:] + calls[:order]
    results = await _gather(*calls)
    answers = [r for r in results if not isinstance(r, list)]
    won = [r for r in answers if not isinstance(r, BaseException)]
    lost = [r for r in answers if isinstance(r, BaseException)]
    assert len(won) == 1 and len(lost) == 1
    assert isinstance(lost[0], ExtensionError) and lost[0].code.value == "EXTENSION_RESOLVED"
    assert all(r == [] for r in results if isinstance(r, list))  # not due: sweeps do nothing
    (row,) = (await world.store.dump()).extensions
    assert row == won[0]
    await _check(world, {"s1": start})


@pytest.mark.parametrize("order", range(5))
async def test_timer_two_sweeps_and_late_answers_at_the_deadline_one_outcome(order: int) -> None:
    world, _ = await _racy_world()
    start = (await world.session("s1")).expires_at  # type: ignore[union-attr]
    ext = await _request(world)
    await world.clock.advance(10)
    calls: list[Awaitable[Any]] = [
        world.service.sweep_due(),
        _worker(world).sweep_due(),
        _worker(world).sweep_due(),
        world.service.respond_to_extension(
            extension_id=ext.id, session_id="s1", mitra_id="m1", accepted=True
        ),
        _worker(world).respond_to_extension(
            extension_id=ext.id, session_id="s1", mitra_id="m1", accepted=False
        ),
    ]
    calls = calls[order:] + calls[:order]
    results = await _gather(*calls)
    resolved = [e for r in results if isinstance(r, list) for e in r]
    assert len(resolved) <= 1  # at most one sweeping worker resolved it
    errors = [r for r in results if isinstance(r, BaseException)]
    assert [e.code.value for e in errors] == ["EXTENSION_RESOLVED"] * 2  # type: ignore[attr-defined]
    dump = await world.store.dump()
    (row,) = dump.extensions
    if row.status is ExtensionStatus.ACCEPTED:  # a sweep approved before the late "no" came
        assert [e.id for e in resolved] == [ext.id] and row.via_timeout
        assert len(dump.ledger) == 1
    else:  # the late "no" ended it first: timed out uncharged, never approved after it
        assert row.status is ExtensionStatus.TIMEOUT and resolved == []
        assert row.failure_cause is FailureCause.EXTENSION_REJECTED and dump.ledger == []
    await _check(world, {"s1": start})


async def test_end_session_races_an_accept() -> None:
    world, _ = await _racy_world()
    start = (await world.session("s1")).expires_at  # type: ignore[union-attr]
    ext = await _request(world)
    results = await _gather(
        world.service.respond_to_extension(
            extension_id=ext.id, session_id="s1", mitra_id="m1", accepted=True
        ),
        _worker(world).end_session("s1"),
    )
    dump = await world.store.dump()
    assert dump.sessions[0].status.value == "ended"
    (row,) = dump.extensions
    if isinstance(results[0], BaseException):
        assert row.status is ExtensionStatus.REJECTED and not dump.ledger
    else:
        assert row.status is ExtensionStatus.ACCEPTED and len(dump.ledger) == 1
    await _check(world, {"s1": start})


async def test_two_requests_at_once_on_one_session_leave_one_pending() -> None:
    world, _ = await _racy_world()
    await world.add_payment(make_payment("p2"))
    results = await _gather(
        _request(world, "p1"),
        _worker(world).request_extension(
            session_id="s1",
            customer_id="c1",
            duration_minutes=30,
            price=15000,
            extension_payment_session_id="p2",
        ),
    )
    errors = [r for r in results if isinstance(r, BaseException)]
    assert len(errors) == 1 and isinstance(errors[0], ExtensionError)
    assert errors[0].status_code == 409
    assert errors[0].code.value in ("SESSION_NOT_ACTIVE", "EXTENSION_PENDING")
    dump = await world.store.dump()
    assert [e.status for e in dump.extensions] == [ExtensionStatus.PENDING]
    await _check(world, {})


async def test_two_extensions_at_once_with_one_payment_session() -> None:
    world, _ = await _racy_world()
    await world.add_session(make_session("s2", expires_at=world.clock.now() + timedelta(hours=1)))
    results = await _gather(
        _request(world, "p1", "s1"),
        _worker(world).request_extension(
            session_id="s2",
            customer_id="c1",
            duration_minutes=30,
            price=15000,
            extension_payment_session_id="p1",
        ),
    )
    errors = [r for r in results if isinstance(r, BaseException)]
    assert len(errors) == 1 and isinstance(errors[0], ExtensionError)
    assert (errors[0].code.value, errors[0].status_code) == ("PAYMENT_IN_USE", 409)
    dump = await world.store.dump()
    assert len(dump.extensions) == 1
    statuses = {s.id: s.status.value for s in dump.sessions}
    assert sorted(statuses.values()) == ["active", "extending"]
    await _check(world, {})


async def test_injected_commit_conflicts_are_retried() -> None:
    world, memory = await _racy_world()
    memory.fail_commits = 3
    ext = await _request(world)
    assert memory.fail_commits == 0
    assert (await world.store.dump()).extensions[0].id == ext.id
    memory.fail_commits = 2
    accepted = await world.service.respond_to_extension(
        extension_id=ext.id, session_id="s1", mitra_id="m1", accepted=True
    )
    assert accepted.status is ExtensionStatus.ACCEPTED
    await _check(world, {})


async def test_conflicts_past_the_retry_budget_give_up_with_conflict_and_write_nothing() -> None:
    world, memory = await _racy_world()
    before = await world.store.dump()
    memory.fail_commits = 8  # the service's max_attempts
    with pytest.raises(ExtensionError) as info:
        await _request(world)
    assert (info.value.code.value, info.value.status_code) == ("CONFLICT", 409)
    assert await world.store.dump() == before
    assert world.sockets.sent == [] and world.push.sent == []


class _GatedStore(YieldingStore):
    """Holds the first call of ``repo.method`` until ``gate`` opens: a repository
    of the memory store's own unit of work (what its row-by-row reads and
    decision write go through), gated."""

    def __init__(self, inner: InspectableStore, repo: str, method: str) -> None:
        super().__init__(inner)
        self.repo, self.method = repo, method
        self.gate = asyncio.Event()
        self.waiting = asyncio.Event()

    def unit_of_work(self) -> Any:
        uow = self.inner.unit_of_work()
        setattr(uow, self.repo, _Gated(getattr(uow, self.repo), self))
        return uow

    async def hold(self, task: asyncio.Task[Any]) -> None:
        """Wait until ``task`` is parked at the gate."""
        waiting = asyncio.ensure_future(self.waiting.wait())
        await asyncio.wait([task, waiting], timeout=5, return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        assert self.waiting.is_set() and not task.done()


class _Gated:
    def __init__(self, inner: Any, store: _GatedStore) -> None:
        self._inner = inner
        self._store = store

    def __getattr__(self, name: str) -> Any:
        call = getattr(self._inner, name)
        if name != self._store.method:
            return call

        async def gated(*args: Any) -> Any:
            if not self._store.gate.is_set():
                self._store.waiting.set()
                await self._store.gate.wait()
            return await call(*args)

        return gated


async def test_a_stale_session_read_cannot_overwrite_a_paid_extension() -> None:
    """ABA: a request read the session while ``active``; meanwhile another
    extension paused it, was accepted (+30 min) and it is ``active`` again.  The
    status-only compare-and-set passes, so the first request must not commit
    its stale copy of the session (the accepted minutes would be lost)."""
    memory = MemoryStore()
    world, session = await new_world(store=memory, use_timers=False)
    await world.add_payment(make_payment("p2"))
    gated = _GatedStore(memory, "sessions", "update")
    slow = asyncio.create_task(
        _worker(world, gated).request_extension(
            session_id="s1",
            customer_id="c1",
            duration_minutes=10,
            price=15000,
            extension_payment_session_id="p2",
        )
    )
    await gated.hold(slow)  # the slow request has read the session and holds its write
    fast = await _request(world, "p1")
    await world.service.respond_to_extension(
        extension_id=fast.id, session_id="s1", mitra_id="m1", accepted=True
    )
    gated.gate.set()
    await slow
    await _check(world, {"s1": session.expires_at})
    current = await world.session("s1")
    assert current is not None
    assert current.expires_at == session.expires_at + timedelta(minutes=30)


class _LockingReadStore(_GatedStore):
    """``claim`` returns the latest committed row, as ``SELECT ... FOR UPDATE``
    does under READ COMMITTED (PostgreSQL's default), not the snapshot."""

    def unit_of_work(self) -> Any:
        uow = super().unit_of_work()
        inner_claim = uow.extensions.claim
        memory = self.inner
        assert isinstance(memory, MemoryStore)

        async def claim(extension_id: str) -> Any:
            await inner_claim(extension_id)  # gate, then join the read set
            return memory.extensions.get(extension_id)

        uow.extensions.claim = claim
        return uow


async def test_ending_while_the_pending_extension_is_answered_retries_on_fresh_state() -> None:
    """``end_session`` found the pending extension, then locked it after a reject
    had committed: it must re-read, not fire ``cancel`` from ``rejected``."""
    memory = MemoryStore()
    world, _ = await new_world(store=memory, use_timers=False)
    ext = await _request(world)
    gated = _LockingReadStore(memory, "extensions", "claim")
    ending = asyncio.create_task(_worker(world, gated).end_session("s1"))
    await gated.hold(ending)
    await world.service.respond_to_extension(
        extension_id=ext.id, session_id="s1", mitra_id="m1", accepted=False
    )
    gated.gate.set()
    ended = await ending
    assert ended.status.value == "ended"
    (row,) = (await world.store.dump()).extensions
    assert (row.status, row.failure_cause) == (
        ExtensionStatus.REJECTED,
        FailureCause.EXTENSION_REJECTED,
    )
    await _check(world, {})


class _ReadCommittedStore(_GatedStore):
    """Every ``get`` returns the latest committed row (READ COMMITTED), not a snapshot."""

    def unit_of_work(self) -> Any:
        uow = super().unit_of_work()
        memory = self.inner
        assert isinstance(memory, MemoryStore)
        tables = {
            "sessions": memory.sessions,
            "payments": memory.payments,
            "extensions": memory.extensions,
        }
        for name, rows in tables.items():
            repo = getattr(uow, name)
            repo.get = _latest(repo.get, rows)
        return uow


def _latest(get: Any, rows: dict[str, Any]) -> Any:
    async def read(key: str) -> Any:
        await get(key)  # gate, then join the read set
        return rows.get(key)

    return read


@pytest.mark.parametrize(
    "isolation",
    [
        # snapshot reads: the accept must not see the payment already failed next
        # to a pending extension (that refused with INVALID_STATE)
        "snapshot",
        # READ COMMITTED: it can read the extension pending and then the payment
        # already failed; it must re-read, not refuse with INVALID_STATE
        "read committed",
    ],
)
async def test_an_answer_never_decides_on_a_half_old_half_new_view(isolation: str) -> None:
    """The accept reads the extension (pending), stalls, and a reject commits
    before it reads the payment.  It retries on fresh state and answers
    EXTENSION_RESOLVED."""
    memory = MemoryStore()
    world, _ = await new_world(store=memory, use_timers=False)
    ext = await _request(world)
    store_class = _GatedStore if isolation == "snapshot" else _ReadCommittedStore
    gated = store_class(memory, "payments", "get")
    slow = asyncio.create_task(
        _worker(world, gated).respond_to_extension(
            extension_id=ext.id, session_id="s1", mitra_id="m1", accepted=True
        )
    )
    await gated.hold(slow)
    await world.service.respond_to_extension(
        extension_id=ext.id, session_id="s1", mitra_id="m1", accepted=False
    )
    gated.gate.set()
    with pytest.raises(ExtensionError) as info:
        await slow
    assert info.value.code.value == "EXTENSION_RESOLVED"
    await _check(world, {})
