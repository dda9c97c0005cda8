"""The measured next step of the HTTP case: how much of the gap to the raw app
is the post-commit delivery, and how much is the rest of the request.

Three apps under the same uvicorn settings and the same clients, alternating,
on fresh sessions of one temporary database (``python -m bench.http_next``):

- ``ours``: the FastAPI example as shipped (each call's outbox rows delivered
  in a background task right after its commit: a claim, the deliveries, a
  batched mark, a mark per dead row);
- ``ours-periodic``: the same example with that post-commit delivery turned
  off, so every row goes out through the periodic dispatch pass (claims of up
  to 100 rows, one mark per claim): the most that coalescing the post-commit
  deliveries of concurrent calls could save (not a setting to ship: rows wait
  up to the pass interval);
- ``raw``: ``bench/raw_app.py``.

Prints throughput, latency and the server's CPU per 1,000 requests per app.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
from collections.abc import AsyncIterator

from fastapi import FastAPI

from examples.fastapi_app.app import create_app

from . import pg
from .harness import Sizes
from .http_case import Run, _create, _one_run, _pct, _seed, _verify
from .http_servers import APPS


def create_periodic_app() -> FastAPI:
    """The example with its post-commit delivery off (the dispatch pass does it)."""
    app = create_app()
    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(a: FastAPI) -> AsyncIterator[None]:
        async with inner(a):
            dispatcher = a.state.runtime.service.dispatcher
            dispatcher.deliver_soon = lambda ids: None
            yield

    app.router.lifespan_context = lifespan
    return app


APPS.setdefault("ours-periodic", "bench.http_next:create_periodic_app")
ORDER = ("ours", "ours-periodic", "raw")


def _row(app: str, runs: list[Run]) -> str:
    calls = sum(len(r.drive.statuses) for r in runs)
    rate = statistics.median(len(r.drive.statuses) / r.drive.elapsed for r in runs)
    acc = [x for r in runs for x in r.drive.accepts]
    cpu = sum(r.server_cpu for r in runs) / calls * 1e3
    pg_cpu = (
        "n/a"
        if any(r.pg_cpu is None for r in runs)
        else f"{sum(r.pg_cpu or 0 for r in runs) / calls * 1e3:.2f}"
    )
    errors = sum(1 for r in runs for s in r.drive.statuses if s >= 500)
    return (
        f"| {app} | {rate:,.0f} | {_pct(acc, 0.5):,.0f} / {_pct(acc, 0.99):,.0f} | "
        f"{cpu:.2f} | {pg_cpu} | {errors} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a check, not speed")
    parser.add_argument(
        "--runs", type=int, default=None, help="runs per app (default: the bench's)"
    )
    args = parser.parse_args()
    sizes = Sizes.small() if args.quick else Sizes.full()
    runs_per_app = args.runs or sizes.http_runs
    skip = pg.available()
    if skip:
        raise SystemExit(skip)
    by: dict[str, list[Run]] = {a: [] for a in ORDER}
    with pg.temporary_database() as url:
        asyncio.run(_create(url))
        for r in range(runs_per_app):
            order = ORDER if r % 2 == 0 else tuple(reversed(ORDER))
            for i, app in enumerate(order):
                prefix = f"N{r}{i}_"
                _seed(url, prefix, sizes.http_sessions + sizes.http_clients)
                run = asyncio.run(_one_run(app, url, prefix, sizes))
                _verify(url, prefix, run.drive.pairs + sizes.http_clients)
                by[app].append(run)
                print(f"run {r} {app}: {len(run.drive.statuses) / run.drive.elapsed:,.0f} req/s")
    print(
        f"\n{sizes.http_clients} clients, {runs_per_app} runs per app of "
        f"{sizes.http_sessions:,} sessions (request + accept), alternating;"
        " CPU in s per 1,000 requests\n"
    )
    print(
        "| app | req/s | accept p50 / p99 ms | server CPU s/1,000 req | PG CPU s/1,000 req | 5xx |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for app in ORDER:
        print(_row(app, by[app]))


if __name__ == "__main__":
    main()
