"""``/metrics`` (Prometheus text) and ``/healthz`` for the example host.

``/metrics`` serves the library's OpenTelemetry instruments through the
Prometheus exporter (the ``example`` extra installs it); one meter provider
per process, made at the first app.  ``/healthz`` answers 200 when the
database answers, Redis answers (when configured) and no pending extension is
more than ``EXTENSION_FSM_HEALTH_MAX_LAG`` seconds (default 30, read by
:class:`~examples.fastapi_app.settings.Settings`) past its
deadline (the sweep is keeping up), else 503; the body says which check
failed.  Rows the sweep set aside (undecidable host values) are reported as
``set_aside`` and never count as lag: one odd row does not fail every
instance.  Each check is bounded by a timeout.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from extension_fsm import metrics

__all__ = ["add_ops_routes"]

_CHECK_TIMEOUT_S = 5.0
_registry: Any = None
_provider: Any = None


def _prometheus_registry() -> Any:
    """The process's Prometheus registry, fed by the library's meter (made
    once); each app made points the library's records at it again, whatever
    provider was in use meanwhile."""
    global _registry, _provider
    if _registry is None:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from opentelemetry.sdk.metrics import MeterProvider
        from prometheus_client import CollectorRegistry

        _registry = CollectorRegistry()
        _provider = MeterProvider(metric_readers=[PrometheusMetricReader(registry=_registry)])
    metrics.use_meter_provider(_provider)
    return _registry


def add_ops_routes(app: FastAPI) -> None:
    """Add ``GET /metrics`` and ``GET /healthz`` to ``app``."""
    registry = _prometheus_registry()

    @app.get("/metrics", include_in_schema=False)
    async def prometheus() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz", include_in_schema=False)
    async def healthz(request: Request) -> JSONResponse:
        rt = request.app.state.runtime
        max_lag = rt.settings.health_max_lag
        checks: dict[str, Any] = {"database": await _database(rt.store, max_lag)}
        if rt.settings.redis_url:
            checks["redis"] = await _redis(rt.redis)
        ok = all(c["ok"] for c in checks.values())
        return JSONResponse({"ok": ok, "checks": checks}, 200 if ok else 503)


async def _database(store: Any, max_lag: float) -> dict[str, Any]:
    if not hasattr(store, "database"):  # the in-memory store: nothing to reach
        return {"ok": True, "note": "in-memory store"}
    from extension_fsm.operator_status import collect_status

    try:
        doc = await asyncio.wait_for(collect_status(store), _CHECK_TIMEOUT_S)
    except Exception as err:  # unreachable, timed out, not migrated
        return {"ok": False, "error": f"{type(err).__name__}: {err}"[:300]}
    metrics.record_status(doc)  # the backlog gauges, fresh at every probe
    lag = doc["extensions"]["oldest_overdue_seconds"] or 0.0
    return {
        "ok": lag <= max_lag,
        "overdue": doc["extensions"]["overdue"],
        "sweep_lag_seconds": lag,
        # rows the sweep could not decide: for people to look at, never lag
        "set_aside": doc["extensions"]["set_aside"],
        "outbox": {k: doc["outbox"][k] for k in ("waiting", "retrying", "dead")},
    }


async def _redis(client: Any) -> dict[str, Any]:
    if client is None:
        return {"ok": False, "error": "not connected"}
    try:
        await asyncio.wait_for(client.ping(), _CHECK_TIMEOUT_S)
    except Exception as err:
        return {"ok": False, "error": f"{type(err).__name__}: {err}"[:300]}
    return {"ok": True}
