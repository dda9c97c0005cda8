"""``ExtensionService`` end to end over SQLite (file) and PostgreSQL, through the
simulation harness, with the invariants of ``docs/design.md`` checked on the rows."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from extension_fsm.adapters.sqlalchemy import SqlAlchemyStore
from extension_fsm.errors import ErrorCode, ExtensionError
from extension_fsm.invariants import check_invariants
from extension_fsm.model import (
    ExtensionStatus,
    MessageType,
    Participant,
    PaymentStatus,
    SessionStatus,
    TimeoutAction,
)
from extension_fsm.ports import StoreDump
from extension_fsm.simulator import World, make_payment, make_session


@pytest.fixture
async def world(sql_backend: SqlAlchemyStore) -> AsyncIterator[World]:
    store = sql_backend
    w = World(store=store)
    now = w.clock.now()
    await w.add_session(make_session("s1", expires_at=now + timedelta(minutes=5)))
    await w.add_payment(make_payment("p1"))
    await w.add_payment(make_payment("p2"))
    try:
        yield w
    finally:
        await w.settle()


def counts(d: StoreDump) -> tuple[int, ...]:
    return tuple(map(len, (d.extensions, d.ledger, d.log, d.outbox)))


async def request(w: World, payment: str = "p1") -> str:
    ext = await w.service.request_extension(
        session_id="s1",
        customer_id="c1",
        duration_minutes=10,
        price=15000,
        extension_payment_session_id=payment,
    )
    await w.settle()  # its deliveries run in the background
    return ext.id


async def healthy(w: World) -> StoreDump:
    await w.settle()
    d = await w.store.dump()
    assert check_invariants(d, now=w.clock.now(), require_delivered=True) == []
    return d


async def test_accept_charges_once_and_extends(world: World) -> None:
    w = world
    before = (await w.store.dump()).sessions[0].expires_at
    ext_id = await request(w)
    done = await w.service.respond_to_extension(
        extension_id=ext_id, session_id="s1", mitra_id="m1", accepted=True
    )
    assert done.status is ExtensionStatus.ACCEPTED
    d = await healthy(w)
    assert d.sessions[0].status is SessionStatus.ACTIVE
    assert d.sessions[0].expires_at == before + timedelta(minutes=10)
    assert [p.status for p in d.payments] == [PaymentStatus.CONSUMED, PaymentStatus.CONFIRMED]
    assert [(e.extension_id, e.amount) for e in d.ledger] == [(ext_id, 15000)]
    types = [m.payload["message"]["type"] for m, _ in d.outbox if m.kind == "notify"]  # type: ignore[index,call-overload]
    assert types.count(MessageType.EXTENSION_RESPONSE.value) == 1
    with pytest.raises(ExtensionError) as caught:
        await w.service.respond_to_extension(
            extension_id=ext_id, session_id="s1", mitra_id="m1", accepted=False
        )
    assert caught.value.code is ErrorCode.EXTENSION_RESOLVED
    assert counts(await w.store.dump()) == counts(d)


async def test_refused_requests_write_no_row(world: World) -> None:
    w = world
    await request(w)
    await w.settle()  # the request's own deliveries finish before the snapshot
    d = await w.store.dump()
    for payment in ("p2", "p1", "nope"):
        with pytest.raises(ExtensionError) as caught:
            await request(w, payment)
        assert caught.value.status_code in (400, 404, 409, 422)
    with pytest.raises(ExtensionError):
        await w.service.request_extension(
            session_id="s1",
            customer_id="c1",
            duration_minutes=-3,
            price=15000,
            extension_payment_session_id="p2",
        )
    assert await w.store.dump() == d


async def test_timeout_by_sweep_after_restart_loses_no_deadline(world: World) -> None:
    w = world
    w.config.timeout_action = TimeoutAction.AUTO_REJECT
    ext_id = await request(w)
    await w.restart()  # every in-process timer is gone; the row still has its deadline
    await w.clock.advance(15)
    d = await healthy(w)
    (row,) = d.extensions
    assert row.id == ext_id and row.status is ExtensionStatus.TIMEOUT and row.via_timeout
    assert d.payments[0].status is PaymentStatus.FAILED and d.ledger == []


async def test_auto_approve_when_mitra_online_and_end_session_rejects_pending(
    world: World,
) -> None:
    w = world
    session = (await w.store.dump()).sessions[0]
    w.connect(session, Participant.MITRA, connected=True, online=True)
    await request(w)
    await w.clock.advance(11)
    d = await healthy(w)
    assert d.extensions[0].status is ExtensionStatus.ACCEPTED and len(d.ledger) == 1
    await request(w, "p2")
    ended = await w.service.end_session("s1")
    assert ended.status is SessionStatus.ENDED
    d = await healthy(w)
    assert sorted(e.status.value for e in d.extensions) == ["accepted", "rejected"]
    assert {p.id: p.status for p in d.payments}["p2"] is PaymentStatus.FAILED
