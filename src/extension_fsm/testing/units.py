"""The unit of work's joined reads (``uow.snapshots``) and decision write
(``uow.write_batch``), required of every store: the same cases over memory,
SQLite (file, ``sqlite://``) and PostgreSQL."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from ..core import Change, Snapshot
from ..model import (
    ExtensionStatus,
    FailureCause,
    LedgerEntry,
    PaymentStatus,
    SessionStatus,
    TimeoutReason,
    TransactionType,
    TransitionRecord,
    set_aside_delay,
)
from ..ports import InspectableStore
from ..simulator.simulation import make_payment, make_session
from .samples import T0, add_committed, ext, msg, read_rows, seed

__all__ = ["UnitOfWorkContract"]


async def _set_aside_one(store: InspectableStore, extension_id: str) -> None:
    async with store.unit_of_work() as uow:
        assert await uow.set_aside(extension_id, T0, "unreadable") == 1
        await uow.commit()


class UnitOfWorkContract:
    """The joined snapshot reads and the one-call decision write every unit of
    work offers (``uow.snapshots``, ``uow.write_batch``)."""

    async def test_for_request_reads_session_payment_pending_and_live(
        self, store: InspectableStore
    ) -> None:
        await seed(store)
        pending = ext("e1", session_id="s1", payment_id="p2")
        await add_committed(store, pending)
        session, payment = await read_rows(store, "s1", "p2")
        async with store.unit_of_work() as uow:
            got = await uow.snapshots.for_request("s1", "p2")
        assert got == Snapshot(
            session=session, payment=payment, pending=pending, payment_live=pending
        )
        async with store.unit_of_work() as uow:
            free = await uow.snapshots.for_request("s2", "p1")
            no_payment = await uow.snapshots.for_request("s2", None)
            missing = await uow.snapshots.for_request("nope", "p1")
        assert free.session is not None and free.session.id == "s2"
        assert free.payment is not None and free.payment.id == "p1"
        assert free.pending is None and free.payment_live is None
        assert no_payment.payment is None and no_payment.session is not None
        assert missing.session is None and missing.pending is None

    async def test_for_response_reads_the_extension_and_its_payment(
        self, store: InspectableStore
    ) -> None:
        await seed(store)
        await add_committed(store, ext("e1"))
        async with store.unit_of_work() as uow:
            got = await uow.snapshots.for_response("s1", "e1")
            unknown = await uow.snapshots.for_response("s1", "nope")
            no_session = await uow.snapshots.for_response("nope", "e1")
        assert got.session is not None and got.session.id == "s1"
        assert got.extension == ext("e1")
        assert got.payment is not None and got.payment.id == "p1"
        assert unknown.session is not None and unknown.extension is None
        assert no_session.session is None and no_session.extension is None

    async def test_for_end_reads_the_session_its_pending_extension_and_payment(
        self, store: InspectableStore
    ) -> None:
        await seed(store)
        await add_committed(store, ext("e1"))
        async with store.unit_of_work() as uow:
            got = await uow.snapshots.for_end("s1")
            none_pending = await uow.snapshots.for_end("s2")
            missing = await uow.snapshots.for_end("nope")
        assert got.session is not None and got.session.id == "s1"
        assert got.pending == ext("e1")
        assert got.payment is not None and got.payment.id == "p1"
        assert none_pending.session is not None and none_pending.session.id == "s2"
        assert none_pending.pending is None and none_pending.payment is None
        assert missing.session is None and missing.pending is None

    async def test_for_timeout_claims_and_reads_a_pending_extension(
        self, store: InspectableStore
    ) -> None:
        await seed(store)
        await add_committed(store, ext("e1"))
        async with store.unit_of_work() as uow:
            got = await uow.snapshots.for_timeout("e1")
            missing = await uow.snapshots.for_timeout("nope")
        assert got.extension == ext("e1")
        assert got.session is not None and got.session.id == "s1"
        assert got.payment is not None and got.payment.id == "p1"
        assert missing.session is None and missing.extension is None

    async def test_for_due_and_mitras_due_read_the_due_batch_oldest_first(
        self, store: InspectableStore
    ) -> None:
        await seed(store)
        await store.seed_session(make_session("s3", mitra_id="m3", expires_at=T0))
        await store.seed_payment(make_payment("p3"))
        await store.seed_session(make_session("s4", mitra_id="m4", expires_at=T0))
        await store.seed_payment(make_payment("p4"))
        await add_committed(
            store,
            ext("late", expires_at=T0 + timedelta(seconds=30)),
            ext("b", session_id="s2", payment_id="p2", expires_at=T0 + timedelta(seconds=5)),
            ext("a", session_id="s3", payment_id="p3", expires_at=T0 + timedelta(seconds=1)),
            ext("aside", session_id="s4", payment_id="p4", expires_at=T0),
        )
        await _set_aside_one(store, "aside")
        now = T0 + timedelta(seconds=5)
        async with store.unit_of_work() as uow:
            mitras = await uow.snapshots.mitras_due(now, 10)
        assert mitras == {"m1", "m3"}  # s2's mitra is make_session's default, m1
        async with store.unit_of_work() as uow:
            assert await uow.snapshots.for_due(T0 - timedelta(minutes=1), 10) == []
            (first,) = await uow.snapshots.for_due(now, 1)
            rest = await uow.snapshots.for_due(now, 10)
        assert isinstance(first, Snapshot) and first.extension is not None
        assert first.extension.id == "a"  # the oldest deadline first
        # A store that claims the batch (a lease) skips "a" now; one that
        # reads it inside its one write lock reads it again.
        ids = [s.extension.id for s in rest if isinstance(s, Snapshot) and s.extension]
        assert ids in (["b"], ["a", "b"]), ids
        for item in [first, *rest]:
            assert isinstance(item, Snapshot) and item.extension and item.session
            assert item.session.id == item.extension.session_id
            assert item.payment is not None and item.payment.id == item.extension.payment_session_id

    async def test_write_batch_writes_every_row_at_commit(self, store: InspectableStore) -> None:
        await seed(store)
        await add_committed(store, ext("e1"))
        session, payment = await read_rows(store, "s1", "p1")
        assert session is not None and payment is not None
        accepted = replace(ext("e1"), status=ExtensionStatus.ACCEPTED, responded_at=T0)
        resumed = replace(session, status=SessionStatus.CLOSING)
        consumed = replace(payment, status=PaymentStatus.CONSUMED)
        entry = LedgerEntry("c1", "s1", "e1", TransactionType.EXTENSION, 15000, T0)
        record = TransitionRecord("extension", "e1", "pending", "accepted", "accept", "mitra", T0)
        async with store.unit_of_work() as uow:
            await uow.write_batch(
                Change("pending", accepted),
                Change(str(session.status), resumed),
                Change(str(payment.status), consumed),
                entry,
                [record],
                [msg("m1"), msg("m2", 1)],
            )
            await uow.commit()
        d = await store.dump()
        assert d.extensions == [accepted] and d.ledger == [entry] and d.log == [record]
        assert [s.status for s in d.sessions if s.id == "s1"] == [SessionStatus.CLOSING]
        assert [p.status for p in d.payments if p.id == "p1"] == [PaymentStatus.CONSUMED]
        assert d.outbox == [(msg("m1"), False), (msg("m2", 1), False)]

    async def test_write_batch_writes_every_column_a_decision_changed(
        self, store: InspectableStore
    ) -> None:
        # Not the status alone: an accept moves the session's expiry, an
        # ending one its closure deadline, a failed payment keeps its cause,
        # a resolved extension its outcome.
        await seed(store)
        await add_committed(store, ext("e1"))
        async with store.unit_of_work() as uow:
            read = await uow.snapshots.for_response("s1", "e1")  # read as a call reads
            session, payment = read.session, read.payment
            assert session is not None and payment is not None
            later = session.expires_at + timedelta(minutes=10)
            moved = replace(
                session, status=SessionStatus.CLOSING, expires_at=later, closure_deadline=later
            )
            failed = replace(
                payment, status=PaymentStatus.FAILED, failure_cause=FailureCause.EXTENSION_REJECTED
            )
            timed_out = replace(
                ext("e1"),
                status=ExtensionStatus.TIMEOUT,
                responded_at=T0 + timedelta(seconds=10),
                via_timeout=True,
                reason=TimeoutReason.SAFEGUARD,
                failure_cause=FailureCause.EXTENSION_SAFEGUARD_TRIPPED,
            )
            await uow.write_batch(
                Change("pending", timed_out),
                Change(str(session.status), moved),
                Change(str(payment.status), failed),
                None,
                [],
                [],
            )
            await uow.commit()
        got_session, got_payment = await read_rows(store, "s1", "p1")
        assert got_session == moved and got_payment == failed
        async with store.unit_of_work() as uow:
            got = await uow.snapshots.for_response("s1", "e1")
        assert got.extension == timed_out
        assert [e for e in (await store.dump()).extensions if e.id == "e1"] == [timed_out]

    async def test_a_resolved_extension_is_read_as_pending_nowhere(
        self, store: InspectableStore
    ) -> None:
        # Each read that asks for a pending extension filters on the status:
        # a resolved one (here accepted, and timed out, long due) is none.
        await seed(store)
        await add_committed(
            store,
            ext("e1", status=ExtensionStatus.ACCEPTED, expires_at=T0),
            ext("e2", session_id="s2", payment_id="p2", status=ExtensionStatus.TIMEOUT),
        )
        now = T0 + timedelta(minutes=1)
        async with store.unit_of_work() as uow:
            ended = await uow.snapshots.for_end("s1")
            timed = await uow.snapshots.for_timeout("e1")
            other = await uow.snapshots.for_timeout("e2")
            requested = await uow.snapshots.for_request("s2", "p2")
            assert await uow.snapshots.due_ids(now, 10) == []
            assert await uow.snapshots.mitras_due(now, 10) == set()
            assert await uow.snapshots.for_due(now, 10) == []
        assert ended.session is not None and ended.pending is None and ended.payment is None
        # a timeout's read may return the resolved row (the decision does
        # nothing with it) but never as pending
        for timed_out, status in (
            (timed, ExtensionStatus.ACCEPTED),
            (other, ExtensionStatus.TIMEOUT),
        ):
            assert timed_out.extension is None or timed_out.extension.status == status
        assert requested.pending is None and requested.payment_live is None

    async def test_set_aside_counts_each_time_and_backs_off_longer(
        self, store: InspectableStore
    ) -> None:
        await seed(store)
        await add_committed(store, ext("e1", expires_at=T0))
        async with store.unit_of_work() as uow:
            assert await uow.set_aside("e1", T0, "unreadable") == 1
            await uow.commit()
        again = T0 + set_aside_delay(1)
        async with store.unit_of_work() as uow:
            assert await uow.snapshots.due_ids(again - timedelta(seconds=1), 10) == []
            assert await uow.snapshots.due_ids(again, 10) == ["e1"]  # due again
            assert await uow.set_aside("e1", again, "still unreadable") == 2
            await uow.commit()
        back = again + set_aside_delay(2)  # a longer delay the second time
        async with store.unit_of_work() as uow:
            assert await uow.snapshots.due_ids(back - timedelta(seconds=1), 10) == []
            assert await uow.snapshots.due_ids(back, 10) == ["e1"]

    async def test_for_due_claims_no_row_of_a_mitra_not_asked(
        self, store: InspectableStore
    ) -> None:
        # The sweep asks the presence of the mitras it gathered and leaves
        # another mitra's row for its next pass: a store that claims its batch
        # must not hold that row (it would wait out the claim unswept).
        await seed(store)
        await store.seed_session(make_session("s3", mitra_id="m3", expires_at=T0))
        await store.seed_payment(make_payment("p3"))
        await add_committed(
            store,
            ext("a", session_id="s3", payment_id="p3", expires_at=T0),
            ext("b", expires_at=T0 + timedelta(seconds=1)),  # s1: mitra m1
        )
        now = T0 + timedelta(seconds=5)
        async with store.unit_of_work() as uow:
            first = await uow.snapshots.for_due(now, 10, {"m3"})
            await uow.commit()
        ids = [s.extension.id for s in first if isinstance(s, Snapshot) and s.extension]
        assert "a" in ids, ids
        async with store.unit_of_work() as uow:
            rest = await uow.snapshots.for_due(now, 10, {"m1"})
        ids = [s.extension.id for s in rest if isinstance(s, Snapshot) and s.extension]
        assert "b" in ids, ids

    async def test_write_batch_inserts_a_new_extension(self, store: InspectableStore) -> None:
        await seed(store)
        async with store.unit_of_work() as uow:
            await uow.write_batch(Change(None, ext("e1")), None, None, None, [], [])
            await uow.commit()
        assert (await store.dump()).extensions == [ext("e1")]
