"""OpenTelemetry metrics: what the flow decides, refuses and delivers.

Instruments come from the OpenTelemetry metrics API (the ``metrics`` extra,
``opentelemetry-api``); without it every call here is a cheap no-op, and
with the API but no SDK configured by the host the API's own no-op meter
drops them.  A host exports them with any OpenTelemetry reader (the FastAPI
example serves Prometheus text at ``/metrics``).

Instruments (meter ``extension_fsm``):

- ``extension_fsm.decisions`` (counter; ``event``, ``outcome`` = applied |
  noop | refused): every call through the service, and every timeout (timer
  or sweep);
- ``extension_fsm.refusals`` (counter; ``event``, ``code``): refused calls by
  error code;
- ``extension_fsm.conflicts_retried`` (counter; ``event``): units of work
  re-run after a lost race;
- ``extension_fsm.unit_of_work.duration`` (histogram, s; ``event``): from
  load to delivered, lost races included (a timeout batch that found no row
  is not timed);
- ``extension_fsm.timeout.lag`` (histogram, s; ``path`` = timer | sweep):
  how long after its deadline a pending extension was resolved;
- ``extension_fsm.outbox.deliveries`` (counter; ``channel`` = the row's
  kind, notify | session_timer, ``result`` = delivered | retried | dead);
- ``extension_fsm.outbox.backlog`` (gauge; ``state`` = waiting | retrying |
  dead) and ``extension_fsm.extensions.overdue`` (gauge): the last
  :func:`record_status` (the worker refreshes it).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

try:
    from opentelemetry import metrics as otel
except ImportError:  # the ``metrics`` extra is not installed
    otel = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from .core import Decision
    from .errors import ExtensionError
    from .model import Event, Extension

__all__ = [
    "conflict",
    "decided",
    "delivery",
    "enabled",
    "record_status",
    "refused",
    "started",
    "timed_out",
    "use_meter_provider",
]

_gauges: dict[tuple[str, str], float] = {}


class _Instruments:
    def __init__(self, meter: Any) -> None:
        self.decisions = meter.create_counter(
            "extension_fsm.decisions", unit="1", description="decisions by event and outcome"
        )
        self.refusals = meter.create_counter(
            "extension_fsm.refusals", unit="1", description="refused calls by error code"
        )
        self.conflicts = meter.create_counter(
            "extension_fsm.conflicts_retried", unit="1", description="units of work re-run"
        )
        self.duration = meter.create_histogram(
            "extension_fsm.unit_of_work.duration", unit="s", description="one call, end to end"
        )
        self.lag = meter.create_histogram(
            "extension_fsm.timeout.lag", unit="s", description="resolution after the deadline"
        )
        self.deliveries = meter.create_counter(
            "extension_fsm.outbox.deliveries", unit="1", description="outbox rows by result"
        )
        meter.create_observable_gauge(
            "extension_fsm.outbox.backlog",
            callbacks=[_observe("outbox")],
            unit="1",
            description="outbox rows waiting, retrying, dead",
        )
        meter.create_observable_gauge(
            "extension_fsm.extensions.overdue",
            callbacks=[_observe("overdue")],
            unit="1",
            description="pending extensions past their deadline",
        )


def _observe(group: str) -> Any:
    def callback(_options: Any) -> Iterable[Any]:
        assert otel is not None
        for (g, state), value in list(_gauges.items()):
            if g == group:
                yield otel.Observation(value, {"state": state} if state else {})

    return callback


_instruments: _Instruments | None = None
_provider: Any | None = None  # the provider _instruments were made on (None: the global one)


def use_meter_provider(provider: Any | None) -> None:
    """Record through ``provider`` from now on (``None``: the global one, the
    default).  Tests pass an SDK ``MeterProvider`` with an in-memory reader.
    Asking again for the provider already in use changes nothing (its
    instruments are not registered twice)."""
    global _instruments, _provider
    if otel is None:
        _instruments = None
        return
    if provider is not None and provider is _provider and _instruments is not None:
        return
    _provider = provider
    from . import __version__  # here: the package has finished importing by now

    meter = (provider or otel.get_meter_provider()).get_meter("extension_fsm", __version__)
    _instruments = _Instruments(meter)


def enabled() -> bool:
    """Whether the OpenTelemetry API is installed (records may still go nowhere)."""
    return otel is not None


def _get() -> _Instruments | None:
    if _instruments is None and otel is not None:
        use_meter_provider(None)
    return _instruments


def _event(event: Event | str) -> str:
    return event if isinstance(event, str) else type(event).__name__


def started() -> float:
    """A start mark for :func:`decided`."""
    return time.perf_counter()


def decided(event: Event, decision: Decision, since: float) -> None:
    """A unit of work committed ``decision`` (or found nothing to do)."""
    m = _get()
    if m is None:
        return
    name = _event(event)
    m.decisions.add(1, {"event": name, "outcome": "noop" if decision.is_empty else "applied"})
    m.duration.record(time.perf_counter() - since, {"event": name})


def refused(event: Event, error: ExtensionError, since: float | None = None) -> None:
    """A call refused with ``error`` (nothing written)."""
    m = _get()
    if m is None:
        return
    name = _event(event)
    m.decisions.add(1, {"event": name, "outcome": "refused"})
    m.refusals.add(1, {"event": name, "code": str(error.code)})
    if since is not None:
        m.duration.record(time.perf_counter() - since, {"event": name})


def conflict(event: Event | str) -> None:
    """A unit of work lost a race and is re-run."""
    m = _get()
    if m is not None:
        m.conflicts.add(1, {"event": _event(event)})


def timed_out(
    resolved: Sequence[Extension], noops: int, since: float, now: datetime, path: str
) -> None:
    """One unit of work of timeouts (``path``: timer | sweep) resolved
    ``resolved`` at ``now`` and found ``noops`` rows with nothing to do."""
    m = _get()
    if m is None or not (resolved or noops):
        return
    event = {"event": "TimeoutExtension"}
    for row in resolved:
        m.decisions.add(1, {**event, "outcome": "applied"})
        m.lag.record(max(0.0, (now - row.expires_at).total_seconds()), {"path": path})
    if noops:
        m.decisions.add(noops, {**event, "outcome": "noop"})
    m.duration.record(time.perf_counter() - since, event)


def delivery(kind: str, result: str) -> None:
    """One outbox row was delivered, put back for a retry, or given up on."""
    m = _get()
    if m is not None:
        m.deliveries.add(1, {"channel": kind, "result": result})


def record_status(status: Mapping[str, Any]) -> None:
    """Feed the gauges from a :func:`extension_fsm.operator_status.collect_status` document."""
    outbox = status.get("outbox", {})
    for state in ("waiting", "retrying", "dead"):
        if isinstance(outbox.get(state), int):
            _gauges[("outbox", state)] = float(outbox[state])
    overdue = status.get("extensions", {}).get("overdue")
    if isinstance(overdue, int):
        _gauges[("overdue", "")] = float(overdue)
