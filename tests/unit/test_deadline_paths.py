"""The one deadline path of the service over the in-memory store: a late "no",
a timer on an extension whose session row the host deleted, a timer whose
timeout the core refuses (set aside as the sweep sets it aside), and a sweep
whose batch cannot be read (batches of one, the culprit set aside)."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest

from extension_fsm import (
    ErrorCode,
    ExtensionError,
    ExtensionService,
    ExtensionStatus,
    FailureCause,
    Participant,
    PaymentStatus,
    TimeoutAction,
    TimeoutReason,
    core,
)
from extension_fsm.adapters.rowwise import RowSnapshots
from extension_fsm.core import Decision, Snapshot
from extension_fsm.model import Event, Facts, TimeoutExtension
from extension_fsm.simulator import World, make_payment, make_session
from tests.unit._support import new_world, other_worker


async def _request(world: World, session_id: str = "s1", payment_id: str = "p1") -> str:
    ext = await world.service.request_extension(
        session_id=session_id,
        customer_id="c1",
        duration_minutes=30,
        price=15000,
        extension_payment_session_id=payment_id,
    )
    return ext.id


async def test_a_late_no_times_out_uncharged_at_once_though_the_timeout_would_approve() -> None:
    world, session = await new_world(use_timers=False)  # no timer, no sweep: still pending
    world.connect(session, Participant.MITRA, connected=True, online=True)  # would approve
    ext_id = await _request(world)
    await world.clock.advance(world.config.timeout_seconds + 1)

    with pytest.raises(ExtensionError) as late:
        await world.service.respond_to_extension(
            extension_id=ext_id, session_id="s1", mitra_id="m1", accepted=False
        )

    assert late.value.code.value == "EXTENSION_RESOLVED"
    dump = await world.store.dump()
    (ext,) = dump.extensions
    assert (ext.status, ext.reason) == (ExtensionStatus.TIMEOUT, TimeoutReason.TIMEOUT)
    assert ext.failure_cause is FailureCause.EXTENSION_REJECTED
    assert dump.ledger == []
    assert [p.status for p in dump.payments] == [PaymentStatus.FAILED]
    assert await world.service.sweep_due() == []  # nothing left to auto-approve


async def test_a_timer_on_an_extension_whose_session_row_is_gone_times_it_out_uncharged() -> None:
    world, session = await new_world()  # the in-process timer, auto-approve
    world.connect(session, Participant.MITRA, connected=True, online=True)
    ext_id = await _request(world)
    del world.store.sessions["s1"]  # the host deleted the row

    await world.clock.advance(world.config.timeout_seconds + 1)  # the timer fires

    dump = await world.store.dump()
    (ext,) = dump.extensions
    assert (ext.id, ext.status) == (ext_id, ExtensionStatus.TIMEOUT)
    assert dump.ledger == []
    assert [p.status for p in dump.payments] == [PaymentStatus.FAILED]


async def test_a_timer_whose_timeout_the_core_refuses_sets_it_aside_as_the_sweep_would(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The timer resolves a batch of one through the sweep's own code: a row
    the core refuses to time out is set aside with its error, logged once, and
    the sweep then skips it until its backoff is over; nothing is written."""
    world, _ = await new_world()  # the in-process timer
    ext_id = await _request(world)
    decide = core.decide

    def refuse_timeouts(snapshot: Snapshot, event: Event, facts: Facts) -> Decision:
        if isinstance(event, TimeoutExtension):
            raise ExtensionError(ErrorCode.INVALID_STATE, "cannot time it out")
        return decide(snapshot, event, facts)

    monkeypatch.setattr(core, "decide", refuse_timeouts)
    caplog.set_level(logging.ERROR, logger="extension_fsm")
    await world.clock.advance(world.config.timeout_seconds + 1)  # the timer fires

    until, times, error = world.store.set_aside[ext_id]
    assert (times, error) == (1, "ExtensionError: cannot time it out")
    assert until > world.clock.now()
    dump = await world.store.dump()
    assert [e.status for e in dump.extensions] == [ExtensionStatus.PENDING]
    assert dump.ledger == []
    assert [p.status for p in dump.payments] == [PaymentStatus.CONFIRMED]
    assert await world.service.sweep_due() == []  # set aside: skipped until its backoff
    assert world.store.set_aside[ext_id][1] == 1
    logged = [r.getMessage() for r in caplog.records]
    assert logged == [
        f"sweep set extension {ext_id} aside (retried with backoff): "
        "ExtensionError: cannot time it out"
    ]


async def test_an_unreadable_batch_is_swept_as_batches_of_one_and_the_culprit_set_aside(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    world, _ = await new_world(use_timers=False)
    ids = [await _request(world)]
    for n in (2, 3):
        expires = world.clock.now() + timedelta(minutes=30)
        await world.add_session(make_session(f"s{n}", expires_at=expires))
        await world.add_payment(make_payment(f"p{n}"))
        ids.append(await _request(world, f"s{n}", f"p{n}"))
    bad = ids[1]
    read_one = RowSnapshots.for_timeout

    async def unreadable_batch(self: RowSnapshots, *args: object) -> list[Snapshot]:
        raise ValueError("a value the driver cannot convert")

    async def read_or_fail(self: RowSnapshots, extension_id: str) -> Snapshot:
        if extension_id == bad:
            raise ValueError("junk in responded_at")
        return await read_one(self, extension_id)

    monkeypatch.setattr(RowSnapshots, "for_due", unreadable_batch)
    monkeypatch.setattr(RowSnapshots, "for_timeout", read_or_fail)
    caplog.set_level(logging.ERROR, logger="extension_fsm")
    await world.clock.advance(world.config.timeout_seconds + 1)

    resolved = await world.service.sweep_due()

    assert sorted(e.id for e in resolved) == sorted(set(ids) - {bad})
    until, times, error = world.store.set_aside[bad]
    assert times == 1 and until > world.clock.now()
    assert error == "ValueError: junk in responded_at"
    (pending,) = [e for e in (await world.store.dump()).extensions if e.id == bad]
    assert pending.status is ExtensionStatus.PENDING
    # set aside: the next pass skips it until its backoff is over
    assert await world.service.sweep_due() == []
    assert world.store.set_aside[bad][1] == 1
    logged = [r for r in caplog.records if f"extension {bad} aside" in r.getMessage()]
    assert len(logged) == 1 and "junk in responded_at" in logged[0].getMessage()


async def test_after_aclose_no_timer_fires_and_the_deadline_is_left_to_the_sweep() -> None:
    world, _ = await new_world()  # the in-process timer, no periodic sweep
    ext_id = await _request(world)

    await world.service.aclose()
    await world.clock.advance(world.config.timeout_seconds + 1)

    (ext,) = (await world.store.dump()).extensions
    assert (ext.id, ext.status) == (ext_id, ExtensionStatus.PENDING)  # no timer fired
    (swept,) = await world.service.sweep_due()  # deadlines are data: the sweep meets it
    assert (swept.id, swept.status) == (ext_id, ExtensionStatus.TIMEOUT)


@pytest.mark.parametrize("due", [1, 2, 3, 5])
@pytest.mark.parametrize(
    ("action", "reachable", "status", "charged"),
    [
        (TimeoutAction.AUTO_APPROVE, True, ExtensionStatus.ACCEPTED, True),
        (TimeoutAction.AUTO_APPROVE, False, ExtensionStatus.TIMEOUT, False),
        (TimeoutAction.AUTO_REJECT, True, ExtensionStatus.TIMEOUT, False),
    ],
)
async def test_one_sweep_resolves_every_due_extension_as_configured_batch_after_batch(
    due: int,
    action: TimeoutAction,
    reachable: bool,
    status: ExtensionStatus,
    charged: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A worker sweeping two rows a batch: one pass still resolves every due
    extension, each as the action and the mitra's presence decide, and healthy
    rows log no error (no fall back to the row-by-row path)."""
    caplog.set_level(logging.ERROR, logger="extension_fsm")
    world, session = await new_world(use_timers=False)
    world.config.timeout_action = action
    world.connect(session, Participant.MITRA, connected=reachable, online=reachable)
    ids = [await _request(world)]
    for n in range(2, due + 1):
        expires = world.clock.now() + timedelta(minutes=30)
        await world.add_session(make_session(f"s{n}", expires_at=expires))
        await world.add_payment(make_payment(f"p{n}"))
        ids.append(await _request(world, f"s{n}", f"p{n}"))
    worker = ExtensionService(
        world.store,
        clock=world.clock,
        config=world.config,
        sockets=world.sockets,
        presence=world.presence,
        push=world.push,
        session_timer=world.session_timer,
        sweep_batch=2,
    )
    await world.clock.advance(world.config.timeout_seconds + 1)

    resolved = await worker.sweep_due()

    assert sorted(e.id for e in resolved) == sorted(ids)
    assert {e.status for e in resolved} == {status}
    dump = await world.store.dump()
    assert {e.status for e in dump.extensions} == {status}
    assert len(dump.ledger) == (due if charged else 0)
    assert await worker.sweep_due() == []
    assert [r.getMessage() for r in caplog.records] == []
    await worker.aclose()


async def _request_without_timer(world: World, n: int) -> str:
    """Another worker's request (no in-process timer) on session ``s<n>``."""
    expires = world.clock.now() + timedelta(minutes=30)
    await world.add_session(make_session(f"s{n}", expires_at=expires))
    await world.add_payment(make_payment(f"p{n}"))
    worker = other_worker(world)
    ext = await worker.request_extension(
        session_id=f"s{n}",
        customer_id="c1",
        duration_minutes=30,
        price=15000,
        extension_payment_session_id=f"p{n}",
    )
    await worker.aclose()
    return ext.id


async def test_a_timer_resolves_only_its_own_extension_and_forgets_its_handle() -> None:
    """A timer's batch is its one extension: another one due at the same moment
    (requested by a worker without timers) is left to the sweep."""
    world, _ = await new_world()  # the in-process timer
    world.config.timeout_action = TimeoutAction.AUTO_REJECT
    mine = await _request(world)
    other = await _request_without_timer(world, 2)
    assert list(world.service._timers) == [mine]

    await world.clock.advance(world.config.timeout_seconds + 1)  # both due; one timer

    status = {e.id: e.status for e in (await world.store.dump()).extensions}
    assert status == {mine: ExtensionStatus.TIMEOUT, other: ExtensionStatus.PENDING}
    assert world.service._timers == {}
    (swept,) = await world.service.sweep_due()
    assert (swept.id, swept.status) == (other, ExtensionStatus.TIMEOUT)


async def test_a_late_yes_hurries_only_its_own_extension() -> None:
    """A late "yes" arms a timer for now on its extension alone: it is decided
    by its deadline (here approved, the mitra reachable); another due one is not."""
    world, session = await new_world()
    world.connect(session, Participant.MITRA, connected=True, online=True)
    late = await _request_without_timer(world, 1)
    other = await _request_without_timer(world, 2)
    await world.clock.advance(world.config.timeout_seconds + 1)  # no timers: both pending

    with pytest.raises(ExtensionError) as refused:
        await world.service.respond_to_extension(
            extension_id=late, session_id="s1", mitra_id="m1", accepted=True
        )
    await world.clock.advance(1)  # the hurried timer fires

    assert refused.value.code is ErrorCode.EXTENSION_RESOLVED
    status = {e.id: e.status for e in (await world.store.dump()).extensions}
    assert status == {late: ExtensionStatus.ACCEPTED, other: ExtensionStatus.PENDING}


async def test_time_out_returns_the_row_it_resolved_and_none_when_nothing_is_left() -> None:
    world, _ = await new_world(use_timers=False)
    world.config.timeout_action = TimeoutAction.AUTO_REJECT
    ext_id = await _request(world)
    await world.clock.advance(world.config.timeout_seconds + 1)

    resolved = await world.service._sweep.time_out(ext_id)

    assert resolved is not None
    assert (resolved.id, resolved.status) == (ext_id, ExtensionStatus.TIMEOUT)
    assert await world.service._sweep.time_out(ext_id) is None
    assert await world.service._sweep.time_out("no-such-extension") is None
