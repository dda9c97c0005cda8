"""Odd values a host leaves in its rows are data, not crashes (SQLite and PostgreSQL).

A session expiry at PostgreSQL's ``infinity`` / ``-infinity`` or near
9999-12-31 (where adding the bought minutes overflows), extension statuses,
reasons and failure causes this library does not know, NULLs in the columns
that allow them: every call (request, respond, info, end_session, sweep)
answers a clear 4xx ``ExtensionError`` with nothing written, or works; the
sweep resolves such rows (uncharged) instead of setting them aside for ever;
and a row that is set aside is counted in ``status`` on its own, never as
sweep lag (``overdue`` / ``oldest_overdue_seconds``, what ``/healthz`` reads).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text, update

from extension_fsm import core
from extension_fsm.adapters.clock import VirtualClock
from extension_fsm.adapters.sqlalchemy import SqlAlchemyStore
from extension_fsm.errors import ErrorCode, ExtensionError
from extension_fsm.model import ExtensionStatus, PaymentStatus, SessionStatus
from extension_fsm.operator_status import collect_status
from extension_fsm.ports import StoreDump
from extension_fsm.simulator import make_payment, make_session
from tests.integration.host_rows import T0, Host, make_service, pg_url

__all__ = ["pg_url"]  # the fixture, imported for pytest

NEAR_END = datetime(9999, 12, 31, 23, 30, tzinfo=T0.tzinfo)  # + 30 minutes overflows
IN_WINDOW = T0 + timedelta(seconds=5)  # before the seeded deadlines (T0 + 1 min)
LATER = T0 + timedelta(minutes=1, seconds=1)  # just after them


@pytest.fixture(params=["sqlite", "postgres"])
async def sql(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Host]:
    url = "sqlite://" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    prefix = f"o{uuid.uuid4().hex[:8]}_"
    store = await SqlAlchemyStore.open(url, create_schema=True, table_prefix=prefix, clock="local")
    try:
        yield Host(request.param, store)
    finally:
        await store.aclose()


@pytest.fixture
async def pg(pg_url: str) -> AsyncIterator[Host]:
    prefix = f"o{uuid.uuid4().hex[:8]}_"
    store = await SqlAlchemyStore.open(
        pg_url, create_schema=True, table_prefix=prefix, clock="local"
    )
    try:
        yield Host("postgres", store)
    finally:
        await store.aclose()


async def _write(h: Host, stmt: Any, params: dict[str, Any] | None = None) -> None:
    async with h.sql.unit_of_work() as uow:
        await uow.execute(stmt, params)
        await uow.commit()


async def _set_expiry(h: Host, session_id: str, value: str | datetime) -> None:
    """The host sets a session's expiry: ``'infinity'`` / ``'-infinity'`` as SQL text."""
    t = h.sql.tables.sessions
    if isinstance(value, str):
        sql = f"UPDATE {t.name} SET expires_at = '{value}' WHERE id = :id"
        await _write(h, text(sql), {"id": session_id})
    else:
        await _write(h, update(t).where(t.c.id == session_id).values(expires_at=value))


async def _set_extension(h: Host, extension_id: str, **values: Any) -> None:
    t = h.sql.tables.extensions
    await _write(h, update(t).where(t.c.id == extension_id).values(**values))


async def _raw(h: Host, table: str, column: str, row_id: str) -> Any:
    t = getattr(h.sql.tables, table)
    async with h.sql.unit_of_work() as uow:
        row = await uow.first(select(t.c[column]).where(t.c.id == row_id))
    assert row is not None
    return row[0]


async def _refused(h: Host, call: Awaitable[Any], code: ErrorCode) -> ExtensionError:
    """``call`` is refused with ``code`` (a 4xx) and writes nothing."""
    before = _rows(await h.sql.dump())
    with pytest.raises(ExtensionError) as refused:
        await call
    assert refused.value.code is code, refused.value
    assert 400 <= refused.value.status_code < 500
    assert _rows(await h.sql.dump()) == before
    return refused.value


def _rows(dump: StoreDump) -> tuple[Any, ...]:
    """Every row of a dump, outbox rows without their delivered flag (earlier
    calls' deliveries finish in the background)."""
    outbox = [message for message, _ in dump.outbox]
    return (dump.sessions, dump.payments, dump.extensions, dump.ledger, dump.log, outbox)


def _expiries(h: Host) -> list[str | datetime]:
    """The expiries no minutes can be added to, as this engine can hold them."""
    return ["infinity", NEAR_END] if h.kind == "postgres" else [NEAR_END]


async def test_odd_values_session_expiry_past_the_datetime_range_is_refused_or_times_out(
    sql: Host,
) -> None:
    for n, expiry in enumerate(_expiries(sql)):
        tag = f"e{n}"
        # pending extensions on the session before the host set its expiry
        ans, swept, _ = await sql.seed_due(3, tag=tag, expires_at=T0 + timedelta(minutes=1))
        for i in range(3):
            await _set_expiry(sql, f"{tag}s{i:04d}", expiry)
        await sql.store.seed_session(make_session(f"{tag}new", customer_id="cn", expires_at=T0))
        await sql.store.seed_payment(make_payment(f"{tag}newp", customer_id="cn"))
        await _set_expiry(sql, f"{tag}new", expiry)
        clock = VirtualClock(IN_WINDOW)
        service = make_service(sql.store, clock)

        # A new request: no minutes can be added, so it is refused up front.
        refusal = await _refused(
            sql,
            service.request_extension(
                session_id=f"{tag}new",
                customer_id="cn",
                duration_minutes=30,
                price=15000,
                extension_payment_session_id=f"{tag}newp",
            ),
            ErrorCode.INVALID_STATE,
        )
        assert "out of range" in refusal.message
        # The pending ones: shown, an in-time yes is refused, a no works.
        info = await service.pending_extension(f"{tag}s0000")
        assert info is not None and info.extension_id == ans
        await _refused(
            sql,
            service.respond_to_extension(
                extension_id=ans, session_id=f"{tag}s0000", mitra_id="m1", accepted=True
            ),
            ErrorCode.INVALID_STATE,
        )
        rejected = await service.respond_to_extension(
            extension_id=ans, session_id=f"{tag}s0000", mitra_id="m1", accepted=False
        )
        assert rejected.status is ExtensionStatus.REJECTED
        ended_session = await service.end_session(f"{tag}s0002")
        assert ended_session.status is SessionStatus.ENDED
        # Past the deadline the sweep resolves it uncharged (mitra reachable):
        # never set aside for ever, never charged.
        await clock.advance_to(LATER)
        resolved = {e.id: e for e in await service.sweep_due()}
        assert resolved[swept].status is ExtensionStatus.TIMEOUT
        assert await sql.set_aside_of(swept) == (None, 0)
        dump = await sql.store.dump(session_ids=[f"{tag}s{i:04d}" for i in range(3)])
        assert dump.ledger == []
        assert {p.status for p in dump.payments} == {PaymentStatus.FAILED}
        # the host's expiry is left as it was written
        raw = await _raw(sql, "sessions", "expires_at", f"{tag}s0001")
        assert raw.year == 9999


async def test_odd_values_minus_infinity_expiry_extends_from_now(pg: Host) -> None:
    """``-infinity`` is PostgreSQL's (SQLite has no such timestamp)."""
    sql = pg
    await sql.store.seed_session(make_session("ms", customer_id="mc", expires_at=T0))
    await sql.store.seed_payment(make_payment("mp", customer_id="mc"))
    await _set_expiry(sql, "ms", "-infinity")
    service = make_service(sql.store, VirtualClock(T0))
    ext = await service.request_extension(
        session_id="ms",
        customer_id="mc",
        duration_minutes=30,
        price=15000,
        extension_payment_session_id="mp",
    )
    done = await service.respond_to_extension(
        extension_id=ext.id, session_id="ms", mitra_id="m1", accepted=True
    )
    assert done.status is ExtensionStatus.ACCEPTED
    assert await _raw(sql, "sessions", "expires_at", "ms") == T0 + timedelta(minutes=30)


async def test_odd_values_unknown_reason_and_failure_cause_on_a_pending_extension(
    sql: Host,
) -> None:
    ids = await sql.seed_due(4, tag="r", expires_at=T0 + timedelta(minutes=1))
    for ext_id in ids:
        await _set_extension(sql, ext_id, reason="weird", failure_cause="host_refund")
    clock = VirtualClock(IN_WINDOW)
    service = make_service(sql.store, clock)

    info = await service.pending_extension("rs0000")
    assert info is not None and info.extension_id == ids[0]
    # a new request on that session: it is extending (409), not a 500
    await sql.store.seed_payment(make_payment("rnew", customer_id="rc0"))
    await _refused(
        sql,
        service.request_extension(
            session_id="rs0000",
            customer_id="rc0",
            duration_minutes=30,
            price=15000,
            extension_payment_session_id="rnew",
        ),
        ErrorCode.SESSION_NOT_ACTIVE,
    )
    yes = await service.respond_to_extension(
        extension_id=ids[0], session_id="rs0000", mitra_id="m1", accepted=True
    )
    no = await service.respond_to_extension(
        extension_id=ids[1], session_id="rs0001", mitra_id="m1", accepted=False
    )
    assert (yes.status, no.status) == (ExtensionStatus.ACCEPTED, ExtensionStatus.REJECTED)
    assert no.failure_cause is not None and no.failure_cause.value == "extension_rejected"
    assert (await service.end_session("rs0002")).status is SessionStatus.ENDED
    await clock.advance_to(LATER)
    resolved = {e.id: e for e in await service.sweep_due()}
    assert resolved[ids[3]].status is ExtensionStatus.ACCEPTED  # mitra reachable
    # the resolutions wrote their own reason / cause over the host's texts
    assert await _raw(sql, "extensions", "failure_cause", ids[1]) == "extension_rejected"
    assert await _raw(sql, "extensions", "reason", ids[0]) is None


async def test_odd_values_unknown_extension_status_is_not_pending(sql: Host) -> None:
    (odd,) = await sql.seed_due(1, tag="u", expires_at=T0 + timedelta(minutes=1))
    await _set_extension(sql, odd, status="on_hold")
    clock = VirtualClock(IN_WINDOW)
    service = make_service(sql.store, clock)

    assert await service.pending_extension("us0000") is None
    for accepted in (True, False):
        await _refused(
            sql,
            service.respond_to_extension(
                extension_id=odd, session_id="us0000", mitra_id="m1", accepted=accepted
            ),
            ErrorCode.EXTENSION_RESOLVED,
        )
    await clock.advance_to(LATER)
    assert await service.sweep_due() == []
    assert (await service.end_session("us0000")).status is SessionStatus.ENDED
    assert await _raw(sql, "extensions", "status", odd) == "on_hold"  # never written
    assert (await sql.store.dump(session_ids=["us0000"])).ledger == []


async def test_odd_values_nulls_where_a_host_may_leave_them(sql: Host) -> None:
    """No customer row (no display name), NULL topic, closure deadline, reason,
    failure cause and response time; on PostgreSQL also the old service's NULL
    payment session (its column allows it)."""
    ids = await sql.seed_due(3, tag="n", expires_at=T0 + timedelta(minutes=1))
    t = sql.sql.tables
    await _write(sql, update(t.sessions).values(topic_sensitivity=None, closure_deadline=None))
    await _write(sql, update(t.extensions).values(reason=None, failure_cause=None))
    if sql.kind == "postgres":
        x = t.extensions.name
        await _write(sql, text(f"ALTER TABLE {x} ALTER COLUMN payment_session_id DROP NOT NULL"))
        await _set_extension(sql, ids[2], payment_session_id=None)
    clock = VirtualClock(IN_WINDOW)
    service = make_service(sql.store, clock)

    assert (await service.pending_extension("ns0000")) is not None
    yes = await service.respond_to_extension(
        extension_id=ids[0], session_id="ns0000", mitra_id="m1", accepted=True
    )
    assert yes.status is ExtensionStatus.ACCEPTED
    if sql.kind == "postgres":
        await _refused(
            sql,
            service.respond_to_extension(
                extension_id=ids[2], session_id="ns0002", mitra_id="m1", accepted=True
            ),
            ErrorCode.INVALID_STATE,
        )
    await clock.advance_to(LATER)
    resolved = {e.id: e for e in await service.sweep_due()}
    assert resolved[ids[1]].status is ExtensionStatus.ACCEPTED
    if sql.kind == "postgres":
        assert resolved[ids[2]].status is ExtensionStatus.TIMEOUT  # nothing to charge
    for ext_id in ids:
        assert await sql.set_aside_of(ext_id) == (None, 0)


async def test_odd_values_extension_deadline_at_the_ends_of_time(sql: Host) -> None:
    """An answer deadline at ``infinity`` never comes due (answerable, shown); one
    at ``-infinity`` (or the year 1) is long past: refused as late, swept stale."""
    far, gone = await sql.seed_due(2, tag="d", expires_at=T0 + timedelta(minutes=1))
    x = sql.sql.tables.extensions
    if sql.kind == "postgres":
        await _write(
            sql, text(f"UPDATE {x.name} SET expires_at = 'infinity' WHERE id = :i"), {"i": far}
        )
        await _write(
            sql, text(f"UPDATE {x.name} SET expires_at = '-infinity' WHERE id = :i"), {"i": gone}
        )
    else:
        await _set_extension(sql, far, expires_at=datetime.max.replace(tzinfo=T0.tzinfo))
        await _set_extension(sql, gone, expires_at=datetime.min.replace(tzinfo=T0.tzinfo))
    clock = VirtualClock(IN_WINDOW)
    service = make_service(sql.store, clock)

    assert (await service.pending_extension("ds0000")) is not None
    assert await service.pending_extension("ds0001") is None
    await _refused(
        sql,
        service.respond_to_extension(
            extension_id=gone, session_id="ds0001", mitra_id="m1", accepted=True
        ),
        ErrorCode.EXTENSION_RESOLVED,
    )
    resolved = {e.id: e for e in await service.sweep_due()}
    assert set(resolved) == {gone}
    assert resolved[gone].status is ExtensionStatus.TIMEOUT
    assert resolved[gone].reason is not None and resolved[gone].reason.value == "stale"
    yes = await service.respond_to_extension(
        extension_id=far, session_id="ds0000", mitra_id="m1", accepted=True
    )
    assert yes.status is ExtensionStatus.ACCEPTED


async def test_odd_values_a_set_aside_row_is_its_own_count_never_sweep_lag(
    sql: Host, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = await sql.seed_due(3, tag="a", expires_at=T0)
    decide = core.decide

    def refusing(snapshot: core.Snapshot, event: Any, facts: Any) -> core.Decision:
        if snapshot.extension is not None and snapshot.extension.id == ids[1]:
            raise RuntimeError("a row nobody can decide")
        return decide(snapshot, event, facts)

    monkeypatch.setattr(core, "decide", refusing)
    clock = VirtualClock(T0 + timedelta(seconds=1))
    service = make_service(sql.store, clock)
    assert len(await service.sweep_due()) == 2
    assert (await sql.set_aside_of(ids[1]))[1] == 1

    # an hour on: the row is long past its deadline, yet no lag is reported
    status = await collect_status(sql.sql, now=T0 + timedelta(hours=1))
    x = status["extensions"]
    assert (x["pending"], x["set_aside"]) == (1, 1)
    assert (x["overdue"], x["oldest_overdue_seconds"]) == (0, None)
    # an ordinary overdue row still is lag, next to the set-aside one
    (late,) = await sql.seed_due(1, tag="b", expires_at=T0 + timedelta(minutes=59))
    x = (await collect_status(sql.sql, now=T0 + timedelta(hours=1)))["extensions"]
    assert (x["overdue"], x["oldest_overdue_seconds"], x["set_aside"]) == (1, 60.0, 1)
    assert late
