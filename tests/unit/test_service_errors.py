"""Every refusal of the flow (``docs/design.md``, "The flow it keeps", and the
validations of "What it fixes"): right code and status, and nothing written,
nothing delivered (compare ``store.dump()`` before/after)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta

import pytest

from extension_fsm import PaymentStatus, SessionStatus
from extension_fsm.adapters.memory_unit import MemoryUnitOfWork
from extension_fsm.errors import ConcurrencyConflict
from extension_fsm.simulator import World, make_payment, make_session
from tests.unit._support import assert_refused, new_world


def _request(
    world: World,
    *,
    session_id: str = "s1",
    customer_id: str = "c1",
    duration: object = 30,
    price: object = 15000,
    payment_id: str | None = "p1",
) -> Callable[[], Awaitable[object]]:
    def call() -> Awaitable[object]:
        return world.service.request_extension(
            session_id=session_id,
            customer_id=customer_id,
            duration_minutes=duration,  # type: ignore[arg-type]
            price=price,  # type: ignore[arg-type]
            extension_payment_session_id=payment_id,
        )

    return call


async def _pending(world: World) -> str:
    ext = await _request(world)()
    return ext.id  # type: ignore[attr-defined, no-any-return]


# ------------------------------------------------------ SESSION_NOT_ACTIVE 409


async def test_request_by_someone_who_is_not_the_sessions_customer() -> None:
    world, _ = await new_world()
    await world.add_payment(make_payment("p2", customer_id="c2"))
    await assert_refused(
        world, _request(world, customer_id="c2", payment_id="p2"), "SESSION_NOT_ACTIVE", 409
    )


async def test_request_on_an_unknown_session() -> None:
    world, _ = await new_world()
    await assert_refused(world, _request(world, session_id="nope"), "SESSION_NOT_ACTIVE", 409)


@pytest.mark.parametrize("status", [SessionStatus.EXTENDING, SessionStatus.ENDED])
async def test_request_on_a_session_not_active_or_closing(status: SessionStatus) -> None:
    world, _ = await new_world()
    await world.store.seed_session(
        make_session("s2", status=status, expires_at=world.clock.now() + timedelta(hours=1))
    )
    await assert_refused(world, _request(world, session_id="s2"), "SESSION_NOT_ACTIVE", 409)


async def test_a_second_request_while_one_is_pending() -> None:
    world, _ = await new_world()
    await _pending(world)
    await world.add_payment(make_payment("p2"))
    await assert_refused(world, _request(world, payment_id="p2"), "SESSION_NOT_ACTIVE", 409)


# ------------------------------------------------------- VALIDATION_ERROR 422


@pytest.mark.parametrize("payment_id", [None, ""])
async def test_request_without_a_payment_session(payment_id: str | None) -> None:
    world, _ = await new_world()
    await assert_refused(world, _request(world, payment_id=payment_id), "VALIDATION_ERROR", 422)


@pytest.mark.parametrize("duration", [0, -1, 1441, 100_000, "30", 30.5, 1.5, True, None])
async def test_duration_outside_1_to_1440_or_not_an_int(duration: object) -> None:
    world, _ = await new_world()
    await assert_refused(world, _request(world, duration=duration), "VALIDATION_ERROR", 422)


@pytest.mark.parametrize("price", [14999, 15001, 1, 0, -15000, "15000", 15000.5, True, None])
async def test_price_must_equal_the_payment_amount(price: object) -> None:
    world, _ = await new_world(amount=15000)
    await assert_refused(world, _request(world, price=price), "VALIDATION_ERROR", 422)


async def test_a_price_and_duration_written_as_floats_are_taken_as_whole_numbers() -> None:
    """``15000.0`` and ``30.0``, as a JavaScript client may send them: the
    Node service took them, and so does the library (stored as integers)."""
    world, _ = await new_world(amount=15000)
    ext = await _request(world, duration=30.0, price=15000.0)()
    dump = await world.store.dump()
    (row,) = dump.extensions
    assert (row.id, row.price, row.duration_minutes) == (ext.id, 15000, 30)  # type: ignore[attr-defined]
    assert type(row.price) is int and type(row.duration_minutes) is int


@pytest.mark.parametrize("duration", [1, 1440])
async def test_duration_bounds_are_accepted(duration: int) -> None:
    world, _ = await new_world()
    ext = await _request(world, duration=duration)()
    assert ext.duration_minutes == duration  # type: ignore[attr-defined]


# -------------------------------------------------------------- NOT_FOUND 404


async def test_request_with_an_unknown_payment_session() -> None:
    world, _ = await new_world()
    await assert_refused(world, _request(world, payment_id="nope"), "NOT_FOUND", 404)


async def test_answer_to_an_unknown_extension() -> None:
    world, _ = await new_world()
    await _pending(world)
    await assert_refused(
        world,
        lambda: world.service.respond_to_extension(
            extension_id="nope", session_id="s1", mitra_id="m1", accepted=True
        ),
        "EXTENSION_RESOLVED",  # the seed's code: its update matched no pending row
        409,
    )


async def test_answer_naming_an_extension_of_another_session() -> None:
    world, _ = await new_world()
    await world.add_session(
        make_session("s2", mitra_id="m1", expires_at=world.clock.now() + timedelta(hours=1))
    )
    ext_id = await _pending(world)
    await assert_refused(
        world,
        lambda: world.service.respond_to_extension(
            extension_id=ext_id, session_id="s2", mitra_id="m1", accepted=True
        ),
        "EXTENSION_RESOLVED",  # the seed's code: its update matched no pending row
        409,
    )


async def test_ending_an_unknown_session() -> None:
    world, _ = await new_world()
    await assert_refused(world, lambda: world.service.end_session("nope"), "NOT_FOUND", 404)


async def test_request_with_someone_elses_payment_session_is_told_what_a_missing_one_is() -> None:
    world, _ = await new_world()
    await world.add_payment(make_payment("p2", customer_id="c2"))
    foreign = await assert_refused(world, _request(world, payment_id="p2"), "NOT_FOUND", 404)
    missing = await assert_refused(world, _request(world, payment_id="p9"), "NOT_FOUND", 404)
    assert foreign.message == missing.message == "Payment session not found"


# -------------------------------------------------------------- FORBIDDEN 403


@pytest.mark.parametrize(("session_id", "mitra_id"), [("s1", "m2"), ("nope", "m1"), ("s1", "")])
async def test_answer_by_someone_who_is_not_the_sessions_mitra(
    session_id: str, mitra_id: str
) -> None:
    world, _ = await new_world()
    ext_id = await _pending(world)
    await assert_refused(
        world,
        lambda: world.service.respond_to_extension(
            extension_id=ext_id, session_id=session_id, mitra_id=mitra_id, accepted=True
        ),
        "FORBIDDEN",
        403,
    )


# ---------------------------------------------------------- INVALID_STATE 409


@pytest.mark.parametrize(
    "status", [PaymentStatus.PENDING, PaymentStatus.CONSUMED, PaymentStatus.FAILED]
)
async def test_request_with_a_payment_session_that_is_not_confirmed(status: PaymentStatus) -> None:
    world, _ = await new_world()
    await world.add_payment(make_payment("p2", status=status))
    await assert_refused(world, _request(world, payment_id="p2"), "INVALID_STATE", 409)


async def test_request_with_a_payment_session_not_flagged_as_extension() -> None:
    world, _ = await new_world()
    await world.add_payment(make_payment("p2", is_extension=False))
    await assert_refused(world, _request(world, payment_id="p2"), "INVALID_STATE", 409)


# ------------------------------------------- FIRST_SESSION_DISCOUNT_NOT_ALLOWED 400


async def test_request_with_a_first_session_discount_payment() -> None:
    world, _ = await new_world()
    await world.add_payment(make_payment("p2", is_first_session_discount=True))
    await assert_refused(
        world, _request(world, payment_id="p2"), "FIRST_SESSION_DISCOUNT_NOT_ALLOWED", 400
    )


# ----------------------------------------------------- EXTENSION_RESOLVED 409


@pytest.mark.parametrize(("first", "second"), [(True, True), (True, False), (False, True)])
async def test_a_second_answer(first: bool, second: bool) -> None:
    world, _ = await new_world()
    ext_id = await _pending(world)
    await world.service.respond_to_extension(
        extension_id=ext_id, session_id="s1", mitra_id="m1", accepted=first
    )
    await assert_refused(
        world,
        lambda: world.service.respond_to_extension(
            extension_id=ext_id, session_id="s1", mitra_id="m1", accepted=second
        ),
        "EXTENSION_RESOLVED",
        409,
    )


async def test_an_answer_after_the_timeout_resolved_it() -> None:
    world, _ = await new_world()
    ext_id = await _pending(world)
    await world.clock.advance(10)
    await assert_refused(
        world,
        lambda: world.service.respond_to_extension(
            extension_id=ext_id, session_id="s1", mitra_id="m1", accepted=True
        ),
        "EXTENSION_RESOLVED",
        409,
    )


async def test_an_answer_after_the_deadline_but_before_any_sweep() -> None:
    world, _ = await new_world(use_timers=False)
    ext_id = await _pending(world)
    await world.clock.advance(30)  # still pending in storage: no timer, no sweep ran
    await assert_refused(
        world,
        lambda: world.service.respond_to_extension(
            extension_id=ext_id, session_id="s1", mitra_id="m1", accepted=True
        ),
        "EXTENSION_RESOLVED",
        409,
    )


async def test_a_late_answer_hurries_the_timeout() -> None:
    world, _ = await new_world()  # timers on, no periodic sweep
    ext_id = await _pending(world)
    await world.restart()  # the deadline timer is lost
    await world.clock.advance(30)
    assert (await world.store.dump()).extensions[0].status.value == "pending"
    await assert_refused(
        world,
        lambda: world.service.respond_to_extension(
            extension_id=ext_id, session_id="s1", mitra_id="m1", accepted=True
        ),
        "EXTENSION_RESOLVED",
        409,
    )
    await world.clock.advance(0)  # the hurried timer fires now
    assert (await world.store.dump()).extensions[0].status.value == "timeout"


async def test_a_call_that_loses_every_race_is_a_409_conflict_and_writes_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every commit loses a race: the call is retried up to its budget, then
    refused as ``CONFLICT`` (409, "Too much contention; try again")."""
    world, _ = await new_world()
    commits = 0

    async def lose(self: MemoryUnitOfWork) -> None:
        nonlocal commits
        commits += 1
        raise ConcurrencyConflict("could not serialize access")

    monkeypatch.setattr(MemoryUnitOfWork, "commit", lose)

    async def request() -> object:
        return await world.service.request_extension(
            session_id="s1",
            customer_id="c1",
            duration_minutes=30,
            price=15000,
            extension_payment_session_id="p1",
        )

    err = await assert_refused(world, request, "CONFLICT", 409)
    assert err.message == "Too much contention; try again"
    assert commits > 1  # retried before giving up
