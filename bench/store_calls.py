"""Wall and CPU per request and per accept through the service on each backend.

``python -m bench.store_calls [sqlite|pg] [N]`` seeds N sessions, then times
N requests and N accepts (each a whole service call: load, decide, write,
commit; outbox delivery deferred) and prints the median and mean wall and CPU
(process time) per call; then it repeats the calls on further sessions with a
loop-responsiveness probe (a task ticking every millisecond) and reports the
longest gap the event loop saw (the probe's own CPU is kept out of the
timed pass).
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from extension_fsm import PaymentSession, PaymentStatus, Session, SessionStatus
from extension_fsm.adapters.sqlalchemy import SqlAlchemyStore
from extension_fsm.service import ExtensionService

from .service_kit import make_service


async def _probe(gaps: list[float], stop: asyncio.Event) -> None:
    last = time.perf_counter()
    while not stop.is_set():
        await asyncio.sleep(0.001)
        now = time.perf_counter()
        gaps.append(now - last)
        last = now


async def _calls(
    service: ExtensionService, first: int, n: int
) -> dict[str, tuple[list[float], list[float]]]:
    """``n`` requests, then their ``n`` accepts, on sessions ``first`` onwards:
    the wall and CPU seconds of each call."""
    found: dict[str, tuple[list[float], list[float]]] = {}
    ids: list[str] = []
    for name in ("request", "accept"):
        walls, cpus = [], []
        for i in range(first, first + n):
            w0, c0 = time.perf_counter(), time.process_time()
            if name == "request":
                ext = await service.request_extension(
                    session_id=f"s{i}",
                    customer_id=f"c{i}",
                    duration_minutes=15,
                    price=15000,
                    extension_payment_session_id=f"p{i}",
                )
                ids.append(ext.id)
            else:
                await service.respond_to_extension(
                    extension_id=ids[i - first],
                    session_id=f"s{i}",
                    mitra_id=f"m{i}",
                    accepted=True,
                )
            walls.append(time.perf_counter() - w0)
            cpus.append(time.process_time() - c0)
        found[name] = (walls, cpus)
    return found


async def run(url: str, n: int) -> dict[str, tuple[float, float, float, float]]:
    store = await SqlAlchemyStore.open(url, create_schema=True, clock="local")
    service = make_service(store, id_prefix="b")
    soon = datetime.now(UTC) + timedelta(hours=1)
    probed = max(n // 4, 1)
    for i in range(n + probed):
        await store.seed_session(
            Session(f"s{i}", f"c{i}", f"m{i}", SessionStatus.ACTIVE, soon, "R")
        )
        await store.seed_payment(PaymentSession(f"p{i}", f"c{i}", PaymentStatus.CONFIRMED, 15000))
    out: dict[str, tuple[float, float, float, float]] = {}
    for name, (walls, cpus) in (await _calls(service, 0, n)).items():
        out[name] = (
            statistics.median(walls) * 1e6,
            statistics.median(cpus) * 1e6,
            statistics.fmean(walls) * 1e6,
            statistics.fmean(cpus) * 1e6,
        )
    gaps: list[float] = []
    stop = asyncio.Event()
    probe = asyncio.create_task(_probe(gaps, stop))
    await _calls(service, n, probed)
    stop.set()
    await probe
    await service.aclose()
    await store.aclose()
    out[f"max loop gap ({len(gaps)} ticks)"] = (max(gaps, default=0) * 1e6, 0, 0, 0)
    return out


def main() -> None:
    backend = sys.argv[1] if len(sys.argv) > 1 else "sqlite"
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 300
    with tempfile.TemporaryDirectory() as tmp:
        if backend == "sqlite":
            url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        else:
            found = asyncio.run(_on_pg(n))
            _print(backend, n, found)
            return
        found = asyncio.run(run(url, n))
    _print(backend, n, found)


async def _on_pg(n: int) -> dict[str, tuple[float, float, float, float]]:
    from .pg import temporary_database

    with temporary_database() as url:
        return await run(url, n)


def _print(backend: str, n: int, found: dict[str, tuple[float, float, float, float]]) -> None:
    print(f"{backend}, {n} calls each (µs)   median wall  median CPU   mean wall   mean CPU")
    for name, (mw, mc, aw, ac) in found.items():
        print(f"  {name:<28}{mw:>12,.0f}{mc:>12,.0f}{aw:>12,.0f}{ac:>11,.0f}")


if __name__ == "__main__":
    main()
