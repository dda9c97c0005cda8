"""What a host acts on reaches it in commit order per session, on every store.

The issue's case: a reject's ``start_closure_grace`` fails once; before its
retry, a new extension is accepted (``clear_closure_grace``).  Delivered out
of order, the host's timer would hold a grace deadline for a session the
customer just paid to extend.  Payment events of one session likewise keep
their commit order when the first call to the host fails.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import pytest

from extension_fsm import DeliveryError, PaymentConsumed, PaymentFailed
from extension_fsm.adapters.memory import MemoryStore
from extension_fsm.adapters.sqlalchemy import SqlAlchemyStore
from extension_fsm.model import FailureCause, PaymentStatus, SessionStatus
from extension_fsm.ports import InspectableStore
from extension_fsm.simulator import World, make_payment
from tests.unit._support import new_world


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[InspectableStore]:
    if request.param == "memory":
        yield MemoryStore()
        return
    url = (
        f"sqlite:///{tmp_path / 'order.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    sql = await SqlAlchemyStore.open(
        url, create_schema=True, table_prefix=f"o{uuid.uuid4().hex[:8]}_"
    )
    try:
        yield sql
    finally:
        await sql.aclose()


async def _request(world: World, payment_id: str) -> str:
    ext = await world.service.request_extension(
        session_id="s1",
        customer_id="c1",
        duration_minutes=30,
        price=15000,
        extension_payment_session_id=payment_id,
    )
    await world.settle()
    return ext.id


async def _answer(world: World, ext_id: str, accepted: bool) -> None:
    await world.service.respond_to_extension(
        extension_id=ext_id, session_id="s1", mitra_id="m1", accepted=accepted
    )
    await world.settle()


def _fail_once(target: object, name: str, error: Exception) -> list[Exception]:
    """Make ``target.name`` raise ``error`` on its first call, then work as before."""
    original = getattr(target, name)
    left = [error]

    async def flaky(*args: object, **kwargs: object) -> None:
        if left:
            raise left.pop()
        await original(*args, **kwargs)

    setattr(target, name, flaky)
    return left


def _grace_commands(world: World) -> list[tuple[str, datetime | None]]:
    return [(c[0], c[2]) for c in world.session_timer.calls if c[0] != "expiry_extended"]


async def test_a_retried_grace_start_never_lands_after_a_later_clear(
    store: InspectableStore,
) -> None:
    world, _ = await new_world(store=store)
    await world.add_payment(make_payment("p2"))
    left = _fail_once(
        world.session_timer,
        "start_closure_grace",
        DeliveryError("session timer unreachable", retryable=True),
    )
    first = await _request(world, "p1")
    await _answer(world, first, accepted=False)  # start_closure_grace fails here
    assert not left and _grace_commands(world) == []
    second = await _request(world, "p2")  # allowed while closing
    await _answer(world, second, accepted=True)  # commits clear_closure_grace
    await world.clock.advance(5)  # the failed start is due for its retry
    await world.service.dispatcher.dispatch_due()
    await world.settle()

    dump = await world.store.dump()
    (session,) = dump.sessions
    assert session.status is SessionStatus.ACTIVE and session.closure_deadline is None
    assert all(delivered for _, delivered in dump.outbox)
    # The host's timer took the commands in commit order: it ends holding no
    # grace period, as the database says.
    commands = _grace_commands(world)
    assert [c for c, _ in commands] == ["start_closure_grace", "clear_closure_grace"]
    assert world.session_timer.calls[-1][0] == "expiry_extended"
    assert world.session_timer.calls[-1][2] == session.expires_at
    await world.clock.advance(120)  # past the stale grace deadline: nothing ends
    session_after = await world.session("s1")
    assert session_after is not None and session_after.status is SessionStatus.ACTIVE


async def test_payment_events_reach_the_host_in_commit_order_per_session(
    store: InspectableStore,
) -> None:
    world, _ = await new_world(store=store)
    await world.add_payment(make_payment("p2"))
    _fail_once(world.payment_events, "failed", DeliveryError("ledger busy", retryable=True))
    first = await _request(world, "p1")
    await _answer(world, first, accepted=False)  # its "failed" event fails once
    second = await _request(world, "p2")
    await _answer(world, second, accepted=True)  # "consumed" waits behind it
    assert world.payment_events.events == []
    await world.clock.advance(5)
    await world.service.dispatcher.dispatch_due()
    await world.settle()

    events = world.payment_events.events
    assert [type(e) for e in events] == [PaymentFailed, PaymentConsumed]
    failed, consumed = events
    assert isinstance(failed, PaymentFailed) and isinstance(consumed, PaymentConsumed)
    assert (failed.extension_id, failed.payment_session_id, failed.cause) == (
        first,
        "p1",
        FailureCause.EXTENSION_REJECTED,
    )
    assert (consumed.extension_id, consumed.payment_session_id, consumed.amount) == (
        second,
        "p2",
        15000,
    )
    dump = await world.store.dump()
    statuses = {p.id: p.status for p in dump.payments}
    assert statuses == {"p1": PaymentStatus.FAILED, "p2": PaymentStatus.CONSUMED}
    assert all(delivered for _, delivered in dump.outbox)
