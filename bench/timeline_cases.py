"""Random timelines (``extension-fsm simulate --random``): how many a second
each store plays, and that the rate holds as the database fills up.

The same N random timelines are played twice: first into an empty store (the
baseline), then again after 2N others (ours: the last N of 4N).  Each step
checks the invariants over its own timeline's rows only, so the second pass
costs what the first did.  In memory every timeline gets a fresh store, as
``simulate --random`` plays them; on SQLite and PostgreSQL all 4N go into one
database, which is then checked as a whole.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

from extension_fsm.adapters.memory import MemoryStore
from extension_fsm.invariants import check_invariants
from extension_fsm.ports import InspectableStore
from extension_fsm.simulator.randomize import namespaced, random_scenario
from extension_fsm.simulator.scenario import parse_scenario
from extension_fsm.simulator.timeline import run_scenario

from . import pg
from .cpu import Stopwatch, Timing, cpu_row
from .harness import Result, Sizes, check
from .service_kit import open_store
from .sql_cases import now, pg_connect


async def _pass(docs: list[dict[str, Any]], store: InspectableStore | None, tag: str) -> None:
    """Play ``docs`` (ids prefixed with ``tag``); every invariant must hold."""
    for i, doc in enumerate(docs):
        scenario = parse_scenario(namespaced(doc, f"{tag}{i}-"), f"timeline {i}")
        result = await run_scenario(scenario, store if store is not None else MemoryStore())
        check(result.ok, f"{tag}{i}: {result.violations[:1]}")


async def _passes(n: int, store: InspectableStore | None, conn: Any) -> tuple[Timing, Timing]:
    """(the last N of 4N, the same N into an empty store), per timeline."""
    docs = [random_scenario(random.Random(f"bench:{i}")) for i in range(n)]
    fillers = [random_scenario(random.Random(f"filler:{i}")) for i in range(2 * n)]
    watch = Stopwatch.around(conn).start()
    await _pass(docs, store, "first-")
    first = watch.stop(n)
    await _pass(fillers, store, "filler-")
    watch = Stopwatch.around(conn).start()
    await _pass(docs, store, "again-")
    again = watch.stop(n)
    if store is not None:  # the database as a whole, once
        whole = await store.dump()
        check(len(whole.sessions) == 4 * n, f"{len(whole.sessions)} sessions, want {4 * n}")
        problems = check_invariants(whole, now=now(), require_delivered=True)
        check(not problems, f"the whole store: {problems[:1]}")
    return again, first


def _rows(backend: str, n: int, ours: Timing, base: Timing) -> list[Result]:
    rate = 1 / ours.wall
    wall = Result(
        case=f"random timelines, {backend}: the last {n} of {4 * n} vs the first {n}",
        ours=ours.wall * 1e6,
        baseline=base.wall * 1e6,
        unit="µs/timeline",
        baseline_name=f"the same {n} timelines into an empty store",
        target="≤ 1.5x",
        limit=1.5,
        verified=True,
        notes=[
            f"{rate:,.1f} timelines/s on {backend} ({1 / base.wall:,.1f} into an empty store); "
            "every invariant checked after every step, over the timeline's own rows",
            *(
                []
                if backend == "memory"
                else [
                    "what still grows with the database: the outbox has no index by "
                    "session, so a timeline's outbox rows are found by a scan of every "
                    "row's payload (the other tables are read by key or index)"
                ]
            ),
        ],
        extra={"timelines_per_s": round(rate, 2)},
    )
    return [wall, cpu_row(wall, ours, base)]


def memory_timelines(sizes: Sizes) -> list[Result]:
    """Random timelines in memory (a fresh store each)."""
    ours, base = asyncio.run(_passes(sizes.random_timelines, None, None))
    return _rows("memory", sizes.random_timelines, ours, base)


def sqlite_timelines(sizes: Sizes, tmp: Path) -> list[Result]:
    """Random timelines into one SQLite file."""

    async def run() -> tuple[Timing, Timing]:
        store = await open_store(f"sqlite:///{tmp / 'timelines.db'}")
        try:
            return await _passes(sizes.random_timelines, store, None)
        finally:
            await store.aclose()

    ours, base = asyncio.run(run())
    return _rows("SQLite", sizes.random_timelines, ours, base)


def pg_timelines(sizes: Sizes) -> list[Result]:
    """Random timelines into one PostgreSQL database."""
    with pg.temporary_database() as url:

        async def run() -> tuple[Timing, Timing]:
            store = await open_store(url)
            conn = pg_connect(url)
            try:
                return await _passes(sizes.random_timelines, store, conn)
            finally:
                conn.close()
                await store.aclose()

        ours, base = asyncio.run(run())
    return _rows("PostgreSQL", sizes.random_timelines, ours, base)
