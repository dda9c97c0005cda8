"""The pure core against the durable accept it is one part of.

The target: one whole decision (every move fired through ``transitions``)
stays under 5 % of a durable SQLite accept measured in the same run (the
decision is never what a call waits on; the commit is)."""

from __future__ import annotations

import asyncio
import statistics
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from extension_fsm import core
from extension_fsm.model import (
    Extension,
    ExtensionStatus,
    Facts,
    PaymentSession,
    PaymentStatus,
    RespondToExtension,
    Session,
    SessionStatus,
)

from . import raw_sql
from .harness import Result, Sizes, check, median, per_op
from .service_kit import make_service, open_store
from .sql_cases import time_our_accepts

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _snapshot(i: int = 0) -> tuple[core.Snapshot, RespondToExtension]:
    sid, pid, eid = f"s{i}", f"p{i}", f"e{i}"
    session = Session(sid, "c1", "m1", SessionStatus.EXTENDING, NOW + timedelta(minutes=30), "Rina")
    payment = PaymentSession(pid, "c1", PaymentStatus.CONFIRMED, 15_000)
    ext = Extension(
        eid, sid, 15, 15_000, pid, ExtensionStatus.PENDING, NOW, NOW + timedelta(seconds=10), 10
    )
    snapshot = core.Snapshot(session=session, extension=ext, payment=payment)
    return snapshot, RespondToExtension(eid, sid, "m1", True)


FACTS = Facts(now=NOW + timedelta(seconds=3))


def _check_accept(decision: core.Decision, snapshot: core.Snapshot) -> None:
    check(decision.extension is not None, "accept decided nothing")
    assert decision.extension is not None and decision.session and decision.payment
    check(decision.extension.row.status is ExtensionStatus.ACCEPTED, "extension not accepted")
    check(decision.extension.expected == "pending", "extension write is not compare-and-set")
    check(decision.session.row.status is SessionStatus.ACTIVE, "session not resumed")
    check(decision.payment.row.status is PaymentStatus.CONSUMED, "payment not consumed")
    check(decision.ledger is not None and decision.ledger.amount == 15_000, "ledger entry wrong")
    assert snapshot.session is not None
    grown = decision.session.row.expires_at - snapshot.session.expires_at
    check(grown == timedelta(minutes=15), "session expiry not extended by the duration")
    check(len(decision.effects) == 6 and len(decision.log) == 3, "effects or audit log missing")


async def _durable_accepts(path: Path, sizes: Sizes) -> float:
    """Seconds per durable accept through ``ExtensionService`` on a SQLite file
    (WAL, ``synchronous=FULL``): the median of ``sizes.repeats`` runs."""
    store = await open_store(f"sqlite:///{path}")
    conn = raw_sql.sqlite_connect(str(path))
    try:
        service = make_service(store)
        runs = [
            (await time_our_accepts(service, conn, raw_sql.seed_sqlite, f"ca{r}_", sizes.sql_ops))
            for r in range(sizes.repeats)
        ]
    finally:
        conn.close()
        await store.aclose()
    return statistics.median(t.wall for t in runs)


def durable_accept(sizes: Sizes) -> float:
    """:func:`_durable_accepts` on a fresh file."""
    with tempfile.TemporaryDirectory(prefix="efsm_core_") as tmp:
        return asyncio.run(_durable_accepts(Path(tmp) / "core.db", sizes))


def core_decision(sizes: Sizes) -> Result:
    """One accept through ``core.decide`` against a durable SQLite accept."""
    snapshot, event = _snapshot()
    _check_accept(core.decide(snapshot, event, FACTS), snapshot)
    durable = durable_accept(sizes)
    ours = median(
        [
            per_op(lambda: core.decide(snapshot, event, FACTS), sizes.core_ops)
            for _ in range(sizes.repeats)
        ]
    )
    _check_accept(core.decide(snapshot, event, FACTS), snapshot)
    return Result(
        case="core decision: one accept, against the durable accept it is part of",
        ours=ours * 1e6,
        baseline=durable * 1e6,
        unit="µs/op",
        baseline_name="one durable accept through ExtensionService, SQLite file (WAL, "
        "synchronous=FULL), measured in this run",
        target="< 5 %",
        limit=0.05,
        verified=True,
        notes=[
            "ours builds the whole decision (3 compare-and-set rows, ledger entry, 3 audit "
            "records, 6 effects, 3 moves each fired through a transitions Machine) with "
            "plain dataclasses",
        ],
    )
