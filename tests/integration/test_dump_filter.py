"""``dump(session_ids=…, payment_ids=…)``: one timeline's rows out of a shared store.

The simulator checks the invariants after every step over the rows of the
timeline being played, read with this filter, so a database holding a
thousand earlier timelines costs each step nothing more.  Here two timelines
share one store (memory, a SQLite file, PostgreSQL), and each one's filtered
dump must be exactly its own rows of the whole dump, in the whole dump's order.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from extension_fsm.adapters.memory import MemoryStore
from extension_fsm.ports import InspectableStore, StoreDump
from extension_fsm.simulator.randomize import namespaced
from extension_fsm.simulator.scenario import parse_scenario
from extension_fsm.simulator.timeline import run_scenario

ROOT = Path(__file__).resolve().parents[2]
#: an accept (a charge, a consumed payment) and a timeout with a push fallback
PLAYED = ("accept.json", "mitra-push-fallback.json", "one-payment-two-extensions.json")


def _doc(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(
        (ROOT / "examples" / "timelines" / name).read_text(encoding="utf-8")
    )
    loaded.pop("expect", None)
    return loaded


def _own(whole: StoreDump, sids: set[str], pids: set[str]) -> StoreDump:
    """The filter's rule, applied to the whole dump by hand."""
    exts = [e for e in whole.extensions if e.session_id in sids]
    pids = pids | {e.payment_session_id for e in exts}
    owners = {("session", s) for s in sids} | {("payment", p) for p in pids}
    owners |= {("extension", e.id) for e in exts}
    return StoreDump(
        sessions=[s for s in whole.sessions if s.id in sids],
        payments=[p for p in whole.payments if p.id in pids],
        extensions=exts,
        ledger=[e for e in whole.ledger if e.session_id in sids],
        log=[r for r in whole.log if (r.entity, r.entity_id) in owners],
        outbox=[(m, ok) for m, ok in whole.outbox if m.payload["session_id"] in sids],
    )


@pytest.fixture
def postgres_url() -> Iterator[str]:
    from tests.integration.sql_support import private_postgres_database

    with private_postgres_database("dump") as url:
        yield url


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[InspectableStore]:
    if request.param == "memory":
        yield MemoryStore()
        return
    sql = pytest.importorskip("extension_fsm.adapters.sqlalchemy")
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'shared.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    opened = await sql.SqlAlchemyStore.open(url, create_schema=True, clock="local")
    try:
        yield opened
    finally:
        await opened.aclose()


async def test_each_timeline_reads_exactly_its_own_rows(store: InspectableStore) -> None:
    played: dict[str, tuple[set[str], set[str]]] = {}
    for i, name in enumerate(PLAYED):
        doc = namespaced(_doc(name), f"t{i}-")
        result = await run_scenario(parse_scenario(doc, name), store)
        assert result.ok, result.violations
        played[doc["session"]["id"]] = (
            {doc["session"]["id"]},
            {p["id"] for p in doc["payments"]},
        )
    whole = await store.dump()
    assert len(whole.sessions) == len(PLAYED)
    seen_outbox = 0
    for sids, pids in played.values():
        mine = await store.dump(session_ids=sids, payment_ids=pids)
        assert mine == _own(whole, sids, pids)
        assert mine.sessions and mine.extensions and mine.log and mine.outbox
        assert all(m.payload["session_id"] in sids for m, _ in mine.outbox)
        seen_outbox += len(mine.outbox)
    assert seen_outbox == len(whole.outbox)  # every outbox row belongs to one timeline
    charged = await store.dump(session_ids=["t0-s1"])
    assert [e.amount for e in charged.ledger] == [15000]  # the accept's one charge
    assert [p.id for p in charged.payments] == ["t0-p1"]  # named by its extension


async def test_payments_alone_and_no_sessions(store: InspectableStore) -> None:
    doc = namespaced(_doc("accept.json"), "only-")
    await run_scenario(parse_scenario(doc, "accept.json"), store)
    nothing = await store.dump(session_ids=[])
    assert nothing == StoreDump([], [], [], [], [], [])
    unknown = await store.dump(session_ids=["absent"], payment_ids=["only-p1"])
    assert [p.id for p in unknown.payments] == ["only-p1"]
    assert not unknown.sessions and not unknown.extensions and not unknown.outbox
    assert {r.entity for r in unknown.log} <= {"payment"} and unknown.log
