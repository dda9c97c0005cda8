"""Ids a database cannot hold are refused as VALIDATION_ERROR (422) by every
store, before any database call, and nothing is written: NUL bytes (a
PostgreSQL ``invalid byte sequence`` before), ids longer than the id columns,
non-str ids, lone surrogates."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import String

from extension_fsm.adapters.sqlalchemy import build_tables
from extension_fsm.errors import ErrorCode, ExtensionError
from extension_fsm.ports import InspectableStore, StoreDump
from extension_fsm.simulator import World, make_payment, make_session
from extension_fsm.validation import ID_MAX_LENGTH, check_ids

BAD_IDS: list[Any] = [
    "s1\x00",
    "\x00",
    "x" * (ID_MAX_LENGTH + 1),
    "\ud800",
    "ok\udfffok",
    17,
    b"s1",
    ["s1"],
]


@pytest.fixture
async def world(backend: InspectableStore) -> AsyncIterator[World]:
    w = World(store=backend)
    await w.add_session(make_session("s1", expires_at=w.clock.now() + timedelta(minutes=5)))
    await w.add_payment(make_payment("p1"))
    yield w


def calls(w: World, bad: Any, ext_id: str) -> list[Callable[[], Awaitable[Any]]]:
    s = w.service
    good = {"session_id": "s1", "customer_id": "c1", "duration_minutes": 10, "price": 15000}
    request = {**good, "extension_payment_session_id": "p1"}
    respond = {"extension_id": ext_id, "session_id": "s1", "mitra_id": "m1", "accepted": True}
    out: list[Callable[[], Awaitable[Any]]] = []
    for key in ("session_id", "customer_id", "extension_payment_session_id"):
        out.append(lambda key=key: s.request_extension(**{**request, key: bad}))
    for key in ("extension_id", "session_id", "mitra_id"):
        out.append(lambda key=key: s.respond_to_extension(**{**respond, key: bad}))
    out.append(lambda: s.pending_extension(bad))
    out.append(lambda: s.end_session(bad))
    return out


async def test_ids_a_database_cannot_hold_are_a_422_and_write_nothing(world: World) -> None:
    w = world
    ext = await w.service.request_extension(
        session_id="s1",
        customer_id="c1",
        duration_minutes=10,
        price=15000,
        extension_payment_session_id="p1",
    )
    await w.settle()  # earlier calls' deliveries finish before the snapshot
    before: StoreDump = await w.store.dump()
    for bad in BAD_IDS:
        for call in calls(w, bad, ext.id):
            with pytest.raises(ExtensionError) as refused:
                await call()
            assert refused.value.code is ErrorCode.VALIDATION_ERROR, (bad, refused.value)
            assert refused.value.status_code == 422
    assert await w.store.dump() == before
    # The extension is still pending and answerable with good ids.
    done = await w.service.respond_to_extension(
        extension_id=ext.id, session_id="s1", mitra_id="m1", accepted=False
    )
    assert done.status.value == "rejected"


async def test_the_longest_unicode_id_is_stored(world: World) -> None:
    w = world
    sid = "ś" * ID_MAX_LENGTH  # characters, not bytes, are what the columns count
    await w.add_session(make_session(sid, expires_at=w.clock.now() + timedelta(minutes=5)))
    ended = await w.service.end_session(sid)
    assert ended.id == sid


def test_the_id_limit_is_the_width_of_every_id_column() -> None:
    tables = build_tables("", None)
    widths = {
        (table.name, col.name): col.type.length
        for table in tables.metadata.tables.values()
        for col in table.columns
        if (col.name == "id" or col.name.endswith("_id")) and isinstance(col.type, String)
    }
    assert widths
    assert set(widths.values()) == {ID_MAX_LENGTH}, widths


def test_check_ids_passes_good_and_absent_ids() -> None:
    check_ids(a="s1", b=None, c="", d="é" * ID_MAX_LENGTH)
    with pytest.raises(ExtensionError, match=r"^b must"):
        check_ids(a="ok", b="\x00")
