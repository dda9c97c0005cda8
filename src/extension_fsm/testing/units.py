"""The unit of work's joined reads (``uow.snapshots``) and decision write
(``uow.write_batch``), required of every store: the same cases over memory,
SQLite (file, ``sqlite://``) and PostgreSQL."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from ..core import Change, Snapshot
from ..model import (
    ExtensionStatus,
    LedgerEntry,
    PaymentStatus,
    SessionStatus,
    TransactionType,
    TransitionRecord,
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

    async def test_write_batch_inserts_a_new_extension(self, store: InspectableStore) -> None:
        await seed(store)
        async with store.unit_of_work() as uow:
            await uow.write_batch(Change(None, ext("e1")), None, None, None, [], [])
            await uow.commit()
        assert (await store.dump()).extensions == [ext("e1")]
