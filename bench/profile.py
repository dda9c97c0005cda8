"""Where a call's time goes: ``python -m bench.profile accept|undelivered|backlog [N]``.

Runs N accepts (each with its outbox delivered to in-memory sockets; or with
``undelivered``, its outbox rows left in the table, to tell the delivery's
share), or one sweep worker draining N due extensions, through ``ExtensionService`` over
``SqlAlchemyStore`` on a temporary PostgreSQL database under cProfile, and
prints the CPU per call spent in each layer (by the module a function lives
in: ours, SQLAlchemy, the driver, asyncio, built-ins, the rest) and the top functions by
their own time.  ``bench/ANALYSIS.md`` quotes its output.
"""

from __future__ import annotations

import asyncio
import cProfile
import pstats
import sys
import time
from collections import defaultdict
from datetime import timedelta

from . import pg, raw_sql
from .fakes import InMemorySockets
from .service_kit import make_service, open_store
from .sql_cases import deliver_all, now, pg_connect

LAYERS = (  # (a part of the file's path, the layer it belongs to)
    ("/extension_fsm/", "ours (extension_fsm)"),
    ("/sqlalchemy/", "SQLAlchemy"),
    ("/asyncpg/", "asyncpg"),
    ("/transitions/", "transitions"),
    ("/asyncio/", "asyncio"),
    ("/json/", "stdlib: json, logging, dataclasses, enum"),
    ("/logging/", "stdlib: json, logging, dataclasses, enum"),
    ("/dataclasses.py", "stdlib: json, logging, dataclasses, enum"),
    ("/enum.py", "stdlib: json, logging, dataclasses, enum"),
)


async def _accepts(url: str, n: int, profile: cProfile.Profile, *, deliver: bool = True) -> None:
    store = await open_store(url)
    conn = pg_connect(url)
    service = make_service(store, deliver=deliver, sockets=InMemorySockets())
    try:
        for prefix, count, timed in (("w_", 20, False), ("p_", n, True)):
            start = now()
            rows = raw_sql.seed_rows(
                prefix, count, pending=True, now=start, deadline=start + timedelta(hours=1)
            )
            raw_sql.seed_pg(conn, rows)
            if timed:
                profile.enable()
            for i in range(count):
                await service.respond_to_extension(
                    extension_id=f"{prefix}e{i}",
                    session_id=f"{prefix}s{i}",
                    mitra_id=f"{prefix}m{i}",
                    accepted=True,
                )
            if deliver:
                await deliver_all(service, conn, prefix)
            profile.disable()
            raw_sql.check_accepted(conn, prefix, count)
    finally:
        await service.aclose()
        await store.aclose()
        conn.close()


async def _backlog(url: str, n: int, profile: cProfile.Profile) -> None:
    store = await open_store(url)
    conn = pg_connect(url)
    service = make_service(store)
    try:
        t = now() - timedelta(minutes=5)
        raw_sql.seed_pg(conn, raw_sql.seed_rows("b_", n, pending=True, now=t, deadline=t))
        profile.enable()
        resolved = 0
        while swept := await service.sweep_due():
            resolved += len(swept)
        profile.disable()
        if resolved != n:
            raise RuntimeError(f"resolved {resolved} of {n}")
    finally:
        await service.aclose()
        await store.aclose()
        conn.close()


def layers(stats: pstats.Stats, calls: int) -> dict[str, float]:
    """Own CPU time per layer, µs per call."""
    spent: dict[str, float] = defaultdict(float)
    for (path, _line, _name), (_cc, _nc, own, _cum, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        if path == "~":  # a built-in: socket calls, json, datetime, …
            layer = "built-ins (sockets, json, …)"
        else:
            layer = next((label for key, label in LAYERS if key in path), "the rest")
        spent[layer] += own
    return {k: v / calls * 1e6 for k, v in sorted(spent.items(), key=lambda kv: -kv[1])}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    what = args[0] if args else "accept"
    n = int(args[1]) if len(args) > 1 else (2000 if what == "backlog" else 300)
    missing = pg.available()
    if missing is not None:
        print(missing, file=sys.stderr)
        return 1
    profile = cProfile.Profile(time.process_time)  # CPU, not waiting
    run = {
        "accept": _accepts,
        "undelivered": lambda url, n, p: _accepts(url, n, p, deliver=False),
        "backlog": _backlog,
    }[what]
    with pg.temporary_database() as url:
        asyncio.run(run(url, n, profile))
    stats = pstats.Stats(profile)
    per = "extension resolved" if what == "backlog" else "accept"
    print(f"own CPU time per {per}, by layer (cProfile, {n} calls):")
    per_layer = layers(stats, n)
    for layer, us in per_layer.items():
        print(f"  {layer:42} {us:8,.0f} µs")
    print(f"  {'all (cProfile inflates small calls)':42} {sum(per_layer.values()):8,.0f} µs")
    print()
    stats.sort_stats("tottime").print_stats(15)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
