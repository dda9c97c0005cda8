"""``ExtensionService`` and ``SqlAlchemyStore`` are async context managers, and
closing them in either order, with deliveries in flight, finishes them or
hands them back (left in the outbox) without a traceback or an ERROR log."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from extension_fsm import (
    ExtensionService,
    PaymentSession,
    PaymentStatus,
    Session,
    SessionStatus,
)
from extension_fsm.adapters.clock import SystemClock
from extension_fsm.adapters.config import StaticConfig
from extension_fsm.adapters.memory_delivery import (
    MemoryPresence,
    MemoryPush,
    MemorySessionTimer,
    MemorySockets,
)
from extension_fsm.adapters.sqlalchemy import SqlAlchemyStore
from extension_fsm.model import Participant, PushMessage
from tests.integration.sql_support import private_postgres_database


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh database: a SQLite file, or a private PostgreSQL database (asyncpg)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'x.db'}"
        return
    with private_postgres_database("life") as pg:
        yield pg


class HeldPush(MemoryPush):
    """A push provider that answers only when ``release`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def send(self, participant: Participant, user_id: str, message: PushMessage) -> None:
        self.entered.set()
        await self.release.wait()
        await super().send(participant, user_id, message)


def _service(store: SqlAlchemyStore, push: MemoryPush) -> ExtensionService:
    return ExtensionService(
        store,
        clock=SystemClock(),
        config=StaticConfig(timeout_seconds=60),
        sockets=MemorySockets(),
        presence=MemoryPresence(),
        push=push,
        session_timer=MemorySessionTimer(),
    )


async def _request(store: SqlAlchemyStore, service: ExtensionService) -> None:
    now = datetime.now(UTC)
    await store.seed_session(
        Session("s1", "c1", "m1", SessionStatus.ACTIVE, now + timedelta(minutes=5), "Rina")
    )
    await store.seed_payment(PaymentSession("p1", "c1", PaymentStatus.CONFIRMED, 15000))
    await service.request_extension(
        session_id="s1",
        customer_id="c1",
        duration_minutes=15,
        price=15000,
        extension_payment_session_id="p1",
    )


async def _outbox(url: str) -> tuple[int, int]:
    """How many outbox rows ``url`` holds, and how many of them are undelivered."""
    async with await SqlAlchemyStore.open(url) as store:
        dump = await store.dump()
    return len(dump.outbox), sum(1 for _, delivered in dump.outbox if not delivered)


def _errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


async def test_the_context_managers_close_service_then_store_and_deliver(
    url: str, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    push = MemoryPush()
    opened = await SqlAlchemyStore.open(url, create_schema=True, clock="local")
    async with opened as store, _service(store, push) as service:
        await _request(store, service)
        assert service.dispatcher.in_flight == 1  # still running at the exit
    assert [p.participant for p in push.sent] == ["mitra"]  # finished before closing
    rows, undelivered = await _outbox(url)
    assert rows > 0 and undelivered == 0
    assert _errors(caplog) == [] and capsys.readouterr().err == ""


async def test_store_closed_first_hands_back_a_delivery_not_started(
    url: str, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    push = MemoryPush()
    store = await SqlAlchemyStore.open(url, create_schema=True, clock="local")
    service = _service(store, push)
    await _request(store, service)
    assert service.dispatcher.in_flight == 1
    await store.aclose()  # before the background delivery has run at all
    await service.aclose()
    assert push.sent == []
    rows, undelivered = await _outbox(url)
    assert rows > 0 and undelivered == rows  # handed back: the next dispatch pass sends them
    assert _errors(caplog) == [] and capsys.readouterr().err == ""


async def test_store_closed_first_under_a_push_in_flight(
    url: str, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    push = HeldPush()
    store = await SqlAlchemyStore.open(url, create_schema=True, clock="local")
    service = _service(store, push)
    await _request(store, service)
    await asyncio.wait_for(push.entered.wait(), 60)  # claimed, now in the provider
    await store.aclose()
    push.release.set()  # the push lands; marking it delivered finds the store closed
    await service.aclose(grace=60)
    assert [p.participant for p in push.sent] == ["mitra"]
    rows, undelivered = await _outbox(url)
    assert rows > 0 and undelivered == rows  # left leased: sent again after the lease
    assert _errors(caplog) == [] and capsys.readouterr().err == ""


async def test_service_closed_first_cancels_a_push_that_hangs(
    url: str, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    push = HeldPush()
    async with await SqlAlchemyStore.open(url, create_schema=True, clock="local") as store:
        service = _service(store, push)
        await _request(store, service)
        await asyncio.wait_for(push.entered.wait(), 60)
        await service.aclose(grace=0.05)  # the provider never answers: cancelled
        assert service.dispatcher.in_flight == 0
    assert push.sent == []
    rows, undelivered = await _outbox(url)
    assert rows > 0 and undelivered == rows
    assert _errors(caplog) == [] and capsys.readouterr().err == ""
