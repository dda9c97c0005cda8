"""``ExtensionService.session``: the chat session as stored, read through the
port (what a host reads to check who may see a session), on the memory store
and on SQLite."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from extension_fsm import ExtensionError, SessionStatus
from extension_fsm.adapters.memory import MemoryStore
from extension_fsm.adapters.sqlalchemy import SqlAlchemyStore
from extension_fsm.ports import InspectableStore
from tests.unit._support import new_world


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> InspectableStore:
    if request.param == "memory":
        return MemoryStore()
    made = await SqlAlchemyStore.open(f"sqlite:///{tmp_path / 's.db'}", create_schema=True)
    return made


async def test_session_reads_the_stored_row_and_none_when_there_is_none(
    store: InspectableStore,
) -> None:
    world, session = await new_world(store=store, use_timers=False)
    try:
        assert await world.service.session("s1") == session
        assert await world.service.session("nobody") is None
        ext = await world.service.request_extension(
            session_id="s1",
            customer_id="c1",
            duration_minutes=10,
            price=15000,
            extension_payment_session_id="p1",
        )
        paused = await world.service.session("s1")
        assert paused is not None and paused.status is SessionStatus.EXTENDING
        await world.service.respond_to_extension(
            extension_id=ext.id, session_id="s1", mitra_id="m1", accepted=True
        )
        extended = await world.service.session("s1")
        assert extended is not None and extended.status is SessionStatus.ACTIVE
        assert extended.expires_at == session.expires_at + timedelta(minutes=10)
    finally:
        close = getattr(store, "aclose", None)
        if close is not None:
            await close()


@pytest.mark.parametrize("bad", ["s\x00", "s" * 10_000])
async def test_an_id_no_store_can_hold_is_a_422_validation_error(bad: str) -> None:
    world, _ = await new_world(use_timers=False)
    with pytest.raises(ExtensionError) as caught:
        await world.service.session(bad)
    assert (caught.value.code.value, caught.value.status_code) == ("VALIDATION_ERROR", 422)
