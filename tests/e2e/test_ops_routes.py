"""The example host's ``/metrics`` (Prometheus text from the library's
OpenTelemetry instruments) and ``/healthz`` (database, Redis, sweep lag)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

pytest.importorskip("opentelemetry.exporter.prometheus", reason="the example extra is absent")

import httpx

from examples.fastapi_app.app import create_app
from examples.fastapi_app.settings import Settings
from extension_fsm import metrics
from extension_fsm.migrate import upgrade
from tests.e2e.live import LiveServer
from tests.fakes.redis_env import closed_port, new_prefix, redis_url
from tests.ops.seed_overdue import seed

SECRET = "ops-secret-" + "x" * 40


def _settings(db: str, **kwargs: object) -> Settings:
    return Settings(jwt_secret=SECRET, database_url=db, **kwargs)  # type: ignore[arg-type]


class Client:
    """The app served live; ``get`` a path."""

    def __init__(self, settings: Settings) -> None:
        self.server = LiveServer(create_app(settings))

    def __enter__(self) -> Client:
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop()

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.server.url + path, timeout=30)


def test_healthz_is_green_then_red_when_the_sweep_falls_behind(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'h.db'}"
    upgrade(db)
    # The app's own sweeper runs once at start, then not for an hour.
    with Client(_settings(db, sweep_interval=3600.0)) as client:
        first = client.get("/healthz")
        assert first.status_code == 200 and first.json()["ok"] is True
        assert first.json()["checks"]["database"]["overdue"] == 0
        asyncio.run(seed(db, 2))  # deadlines passed a minute ago, nobody sweeps
        late = client.get("/healthz")
        assert late.status_code == 503
        check = late.json()["checks"]["database"]
        assert check["ok"] is False and check["overdue"] == 2 and check["sweep_lag_seconds"] > 30
        text = client.get("/metrics").text
    assert "extension_fsm_decisions_total" in text
    assert 'event="RequestExtension"' in text
    # the gauge the probe refreshed
    assert re.search(r"^extension_fsm_extensions_overdue(\{[^}]*\})? 2\.0$", text, re.M)


def test_metrics_count_decisions_after_another_provider_was_used(tmp_path: Path) -> None:
    """The process's registry is made once; an app made after something else
    pointed the library's records elsewhere (a test's in-memory reader, then
    the global no-op provider) still counts the decisions on its /metrics."""
    db = f"sqlite:///{tmp_path / 'm.db'}"
    upgrade(db)
    with Client(_settings(db, sweep_interval=3600.0)):
        pass  # the registry exists from here on
    metrics.use_meter_provider(None)  # what another user of the library may do meanwhile
    with Client(_settings(db, sweep_interval=3600.0)) as client:
        asyncio.run(seed(db, 1))
        text = client.get("/metrics").text
    assert re.search(
        r'^extension_fsm_decisions_total\{[^}]*event="RequestExtension"[^}]*\} [1-9]', text, re.M
    ), text


def test_odd_values_healthz_stays_green_with_rows_the_sweep_set_aside(tmp_path: Path) -> None:
    """A row the sweep could not decide is reported as ``set_aside``, never as
    sweep lag: it does not turn ``/healthz`` red (on every instance)."""
    db = f"sqlite:///{tmp_path / 'a.db'}"
    upgrade(db)
    with Client(_settings(db, sweep_interval=3600.0)) as client:
        asyncio.run(seed(db, 2))  # a minute overdue, nobody sweeps
        assert client.get("/healthz").status_code == 503
        asyncio.run(_set_all_aside(db))  # what the sweep does with a row it cannot decide
        healthy = client.get("/healthz")
        assert healthy.status_code == 200, healthy.text
        check = healthy.json()["checks"]["database"]
        assert (check["overdue"], check["sweep_lag_seconds"], check["set_aside"]) == (0, 0.0, 2)


async def _set_all_aside(db: str) -> None:
    from datetime import UTC, datetime

    from extension_fsm.adapters.sqlalchemy import SqlAlchemyStore

    store = await SqlAlchemyStore.open(db, clock="local")
    try:
        extensions = (await store.dump()).extensions
        async with store.unit_of_work() as uow:
            for ext in extensions:
                assert await uow.set_aside(ext.id, datetime.now(UTC), "bad row") == 1
            await uow.commit()
    finally:
        await store.aclose()


def test_healthz_reports_an_unreachable_database(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'gone.db'}"
    with Client(_settings(db)) as client:
        client.server.call(client.server.runtime.store.database.dispose())  # type: ignore[attr-defined]
        (tmp_path / "gone.db").unlink()
        (tmp_path / "gone.db").mkdir()  # a directory: SQLite cannot open it
        reply = client.get("/healthz")
    assert reply.status_code == 503
    assert reply.json()["checks"]["database"]["ok"] is False


def test_healthz_checks_redis_when_configured(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'r.db'}"
    up = _settings(db, redis_url=redis_url(), redis_prefix=new_prefix())
    with Client(up) as client:
        reply = client.get("/healthz")
    assert reply.json()["checks"]["redis"] == {"ok": True}, reply.json()
    down = _settings(db, redis_url=f"redis://127.0.0.1:{closed_port()}/0", redis_prefix="x:")
    with Client(down) as client:
        reply = client.get("/healthz")
    assert reply.status_code == 503 and reply.json()["checks"]["redis"]["ok"] is False
