"""The worker's HTTP port: ``/healthz`` (the worker's event loop answers),
``/readyz`` (the database answers and is migrated), ``/metrics``, and 404 for
every other path."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from extension_fsm.migrate import upgrade
from extension_fsm.worker_http import HealthServer, database_ready
from tests.fakes.redis_env import closed_port


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., HealthServer]]:
    started: list[HealthServer] = []

    def start(ready: Callable[[], Any], **kwargs: Any) -> HealthServer:
        server = HealthServer(0, ready, host="127.0.0.1", **kwargs)
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


async def _get(server: HealthServer, path: str) -> httpx.Response:
    # from a thread: the event loop under test must stay free to answer
    url = f"http://127.0.0.1:{server.port}{path}"
    return await asyncio.to_thread(httpx.get, url, timeout=30)


def _ready_for(url: str) -> Callable[[], Any]:
    return lambda: database_ready(url)


async def test_healthz_answers_while_the_worker_loop_runs(
    serve: Callable[..., HealthServer], tmp_path: Path
) -> None:
    server = serve(_ready_for(f"sqlite:///{tmp_path / 'x.db'}"))
    before = await _get(server, "/healthz")
    assert (before.status_code, before.text) == (503, "the worker's event loop is not running\n")
    server.watch(asyncio.get_running_loop())
    alive = await _get(server, "/healthz")
    assert (alive.status_code, alive.text) == (200, "ok\n")


async def test_healthz_fails_when_the_loop_does_not_answer(
    serve: Callable[..., HealthServer], tmp_path: Path
) -> None:
    server = serve(_ready_for(f"sqlite:///{tmp_path / 'x.db'}"), timeout=0.2)
    stuck = asyncio.new_event_loop()  # never run: a callback given to it never runs
    try:
        server.watch(stuck)
        answer = await _get(server, "/healthz")
    finally:
        stuck.close()
    assert answer.status_code == 503 and "did not answer within 0.2 s" in answer.text


async def test_readyz_is_ready_only_on_a_migrated_database(
    serve: Callable[..., HealthServer], tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    server = serve(_ready_for(url))
    server.watch(asyncio.get_running_loop())
    empty = await _get(server, "/readyz")
    assert empty.status_code == 503 and empty.text.startswith("database not migrated (missing ")
    await asyncio.to_thread(upgrade, url)
    ready = await _get(server, "/readyz")
    assert (ready.status_code, ready.text) == (200, "ok\n")


async def test_readyz_says_an_unreachable_database_is_not_ready(
    serve: Callable[..., HealthServer],
) -> None:
    server = serve(_ready_for(f"postgresql://u@127.0.0.1:{closed_port()}/x"))
    answer = await _get(server, "/readyz")
    assert answer.status_code == 503 and answer.text.startswith("database unreachable: ")
    assert answer.text.count("\n") == 1


async def test_readyz_bounds_a_database_that_hangs(serve: Callable[..., HealthServer]) -> None:
    async def hangs() -> str | None:
        await asyncio.Event().wait()
        return None

    server = serve(hangs, timeout=0.2)
    answer = await _get(server, "/readyz")
    assert (answer.status_code, answer.text) == (503, "database did not answer within 0.2 s\n")


@pytest.mark.parametrize("path", ["/", "/health", "/metrics/x", "/readyz/"])
async def test_other_paths_are_404(
    path: str, serve: Callable[..., HealthServer], tmp_path: Path
) -> None:
    server = serve(_ready_for(f"sqlite:///{tmp_path / 'x.db'}"))
    answer = await _get(server, path)
    assert answer.status_code == 404


async def test_metrics_is_prometheus_text(
    serve: Callable[..., HealthServer], tmp_path: Path
) -> None:
    server = serve(_ready_for(f"sqlite:///{tmp_path / 'x.db'}"))
    answer = await _get(server, "/metrics")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    assert "# TYPE" in answer.text
