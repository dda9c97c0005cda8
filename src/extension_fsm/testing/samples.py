"""Sample rows and the helpers the contract cases share (seeding, counting)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ..model import Extension, ExtensionStatus
from ..ports import InspectableStore, OutboxMessage, StoreDump
from ..simulator.simulation import make_payment, make_session

__all__ = ["T0", "add_committed", "counts", "ext", "msg", "seed"]

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
    async with store.unit_of_work() as uow:
        for row in rows:
            await uow.extensions.add(row)
        await uow.commit()
