"""The ``extension_fsm.outbox.deliveries`` counter: each row a pass takes is
counted once, under its channel and what became of it (delivered, retried or
dead), as docs/operations.md lists them."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from extension_fsm import DeliveryError, DispatchReport, OutboxDispatcher, Participant, metrics
from extension_fsm.adapters.clock import VirtualClock
from extension_fsm.adapters.memory import (
    MemoryPush,
    MemorySessionTimer,
    MemorySockets,
    MemoryStore,
)
from extension_fsm.model import Effect, Notify, PushMessage, SessionExpiryExtended
from extension_fsm.outbox import encode_effects
from extension_fsm.testing.samples import add_outbox

pytest.importorskip("opentelemetry.sdk.metrics", reason="the OpenTelemetry SDK is not installed")

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader


@pytest.fixture
def reader() -> Iterator[InMemoryMetricReader]:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    metrics.use_meter_provider(provider)
    yield reader
    metrics.use_meter_provider(None)
    provider.shutdown()


def _deliveries(reader: InMemoryMetricReader) -> dict[tuple[Any, Any], Any]:
    """``{(channel, result): count}`` of the deliveries counter."""
    data = reader.get_metrics_data()
    found: dict[tuple[Any, Any], Any] = {}
    for rm in data.resource_metrics if data else []:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name == "extension_fsm.outbox.deliveries":
                    for p in metric.data.data_points:
                        attributes = dict(p.attributes or {})
                        found[(attributes.get("channel"), attributes.get("result"))] = p.value
    return found


def _pushed(n: int) -> Notify:
    return Notify(
        session_id="s1",
        recipient=Participant.MITRA,
        user_id="m1",
        message={"type": "session_resumed", "n": n},
        dedupe_key=f"e1:k{n}:mitra",
        push=PushMessage("t", "b", {"n": n}),
    )


async def test_each_row_is_counted_once_under_its_channel_and_result(
    reader: InMemoryMetricReader,
) -> None:
    clock = VirtualClock()
    store = MemoryStore()
    push = MemoryPush()
    # One session's pushes (rows without a lane, so one claim holds all three)
    # go one after another: the first fails for now, the second for good, the
    # third goes through.
    push.failures.extend(
        [DeliveryError("busy", retryable=True), DeliveryError("unregistered", retryable=False)]
    )
    dispatcher = OutboxDispatcher(
        store.outbox,
        clock=clock,
        sockets=MemorySockets(),
        push=push,
        session_timer=MemorySessionTimer(),
    )
    effects: list[Effect] = [_pushed(n) for n in range(3)]
    effects.append(SessionExpiryExtended("s2", clock.now()))
    ids = iter(f"r{n}" for n in range(len(effects)))
    rows = encode_effects(effects, clock.now(), lambda: next(ids))
    await add_outbox(store, *(replace(row, lane=None) for row in rows))
    report = await dispatcher.dispatch_due()
    assert report == DispatchReport(delivered=2, retried=1, dead=1)
    assert _deliveries(reader) == {
        ("notify", "retried"): 1,
        ("notify", "dead"): 1,
        ("notify", "delivered"): 1,
        ("session_timer", "delivered"): 1,
    }
