"""Sample rows and the helpers the contract cases share (seeding, counting)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ..core import Change
from ..model import Extension, ExtensionStatus, PaymentSession, Session
from ..ports import InspectableStore, OutboxMessage, StoreDump
from ..simulator.simulation import make_payment, make_session

__all__ = ["T0", "add_committed", "add_outbox", "counts", "ext", "msg", "read_rows", "seed"]

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _is_sql(store: InspectableStore) -> bool:
    """The library's own SQL adapter (stricter checks apply to it)."""
    return type(store).__module__.startswith("extension_fsm.adapters.sqlalchemy")


def _is_postgres(store: InspectableStore) -> bool:
    database = getattr(store, "database", None)
    return _is_sql(store) and bool(getattr(database, "is_postgres", False))


def ext(
    ext_id: str = "e1",
    *,
    session_id: str = "s1",
    payment_id: str = "p1",
    status: ExtensionStatus = ExtensionStatus.PENDING,
    expires_at: datetime = T0 + timedelta(seconds=10),
) -> Extension:
    return Extension(
        id=ext_id,
        session_id=session_id,
        duration_minutes=10,
        price=15000,
        payment_session_id=payment_id,
        status=status,
        requested_at=T0,
        expires_at=expires_at,
        timeout_seconds=10,
    )


def msg(msg_id: str, n: int = 0) -> OutboxMessage:
    return OutboxMessage(
        msg_id, "notify", f"e1:extension_response:{msg_id}", {"n": n, "x": [1, "a"]}, T0
    )


def counts(d: StoreDump) -> tuple[int, ...]:
    return (
        len(d.sessions),
        len(d.payments),
        len(d.extensions),
        len(d.ledger),
        len(d.log),
        len(d.outbox),
    )


async def seed(store: InspectableStore) -> None:
    await store.seed_session(make_session("s1", expires_at=T0 + timedelta(minutes=5)))
    await store.seed_session(make_session("s2", expires_at=T0 + timedelta(minutes=5)))
    await store.seed_payment(make_payment("p1"))
    await store.seed_payment(make_payment("p2"))


async def add_committed(store: InspectableStore, *rows: Extension) -> None:
    """Insert ``rows`` and commit, one decision write each, in one unit of work."""
    async with store.unit_of_work() as uow:
        for row in rows:
            await uow.write_batch(Change(None, row), None, None, None, [], [])
        await uow.commit()


async def read_rows(
    store: InspectableStore, session_id: str, payment_id: str | None = None
) -> tuple[Session | None, PaymentSession | None]:
    """The session and the payment session as stored, read through the port."""
    async with store.unit_of_work() as uow:
        got = await uow.snapshots.for_request(session_id, payment_id)
    return got.session, got.payment


async def add_outbox(store: InspectableStore, *messages: OutboxMessage) -> None:
    """Write ``messages`` (a decision with nothing but outbox rows) and commit."""
    async with store.unit_of_work() as uow:
        await uow.write_batch(None, None, None, None, [], messages)
        await uow.commit()
