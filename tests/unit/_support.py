"""Test helpers shared by the unit and property tests."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from extension_fsm import ExtensionError, ExtensionService, Participant, Session
from extension_fsm.ports import InspectableStore
from extension_fsm.simulator import World, make_payment, make_session

__all__ = [
    "assert_refused",
    "new_world",
    "other_worker",
    "requests_due_in_turn",
    "socket_messages",
]


def socket_messages(world: World, participant: Participant, kind: str) -> list[dict[str, Any]]:
    """Every socket message of type ``kind`` sent to ``participant``."""
    return [
        dict(d.payload)
        for d in world.sockets.sent
        if d.participant is participant and d.payload.get("type") == kind
    ]


async def assert_refused(
    world: World, call: Callable[[], Awaitable[object]], code: str, status: int
) -> ExtensionError:
    """``call`` raises ExtensionError(code, status) and writes nothing at all."""
    before = await world.store.dump()
    sent = (len(world.sockets.sent), len(world.push.sent), len(world.session_timer.calls))
    try:
        await call()
    except ExtensionError as err:
        assert (err.code.value, err.status_code) == (code, status), repr(err)
        after = await world.store.dump()
        assert after == before, "a refused call wrote rows"
        now_sent = (len(world.sockets.sent), len(world.push.sent), len(world.session_timer.calls))
        assert now_sent == sent, "a refused call delivered something"
        return err
    raise AssertionError(f"expected ExtensionError {code}")


async def new_world(
    *,
    store: InspectableStore | None = None,
    sweep_interval: float | None = None,
    use_timers: bool = True,
    expires_in: timedelta = timedelta(minutes=30),
    mitra_on_socket: bool = True,
    customer_on_socket: bool = True,
    amount: int = 15000,
) -> tuple[World, Session]:
    """A world with session ``s1`` (customer ``c1``, mitra ``m1``) and payment ``p1``."""
    world = World(store, sweep_interval=sweep_interval, use_timers=use_timers)
    session = make_session(expires_at=world.clock.now() + expires_in)
    await world.add_session(session)
    await world.add_payment(make_payment(amount=amount))
    world.connect(session, Participant.MITRA, on_session_socket=mitra_on_socket)
    world.connect(session, Participant.CUSTOMER, on_session_socket=customer_on_socket)
    return world, session


async def requests_due_in_turn(world: World, count: int) -> list[str]:
    """``count`` extensions on sessions s1..sN (customer c1), each asked a
    second after the one before, so they fall due (and are claimed) in that
    order; their ids."""
    ids = []
    for n in range(1, count + 1):
        if n > 1:
            expires = world.clock.now() + timedelta(minutes=30)
            await world.add_session(make_session(f"s{n}", expires_at=expires))
            await world.add_payment(make_payment(f"p{n}"))
        ext = await world.service.request_extension(
            session_id=f"s{n}",
            customer_id="c1",
            duration_minutes=30,
            price=15000,
            extension_payment_session_id=f"p{n}",
        )
        ids.append(ext.id)
        await world.clock.advance(1)
    return ids


def other_worker(world: World, **options: Any) -> ExtensionService:
    """Another process's service over the same storage and ports as ``world``
    (no in-process timers); ``options`` are ``ExtensionService`` keywords
    (``sweep_batch``, ``max_attempts``, ``sweep_spread``, ...)."""
    return ExtensionService(
        world.store,
        clock=world.clock,
        config=world.config,
        sockets=world.sockets,
        presence=world.presence,
        push=world.push,
        session_timer=world.session_timer,
        **options,
    )
