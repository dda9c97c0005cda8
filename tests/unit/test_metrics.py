"""OpenTelemetry metrics, read back with the SDK's in-memory reader: decisions
by event and outcome, refusals by code, conflicts retried, unit-of-work
latency, timeout lag, outbox deliveries and the backlog gauges."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from extension_fsm import ErrorCode, ExtensionError, TimeoutAction, core, metrics
from extension_fsm.adapters.memory import MemoryStore
from extension_fsm.adapters.rowwise import RowSnapshots
from extension_fsm.core import Decision, Snapshot
from extension_fsm.model import Event, Facts, TimeoutExtension
from tests.unit._support import new_world, requests_due_in_turn

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


def points(reader: InMemoryMetricReader, name: str) -> dict[tuple[tuple[str, Any], ...], Any]:
    """``{sorted attributes: value}`` (sum, gauge value, or histogram count)."""
    data = reader.get_metrics_data()
    found: dict[tuple[tuple[str, Any], ...], Any] = {}
    for rm in data.resource_metrics if data else []:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name != name:
                    continue
                for p in metric.data.data_points:
                    key = tuple(sorted((p.attributes or {}).items()))
                    found[key] = getattr(p, "value", None)
                    if found[key] is None:
                        found[key] = p.count
    return found


async def _request(world: Any) -> str:
    ext = await world.service.request_extension(
        session_id="s1",
        customer_id="c1",
        duration_minutes=30,
        price=15000,
        extension_payment_session_id="p1",
    )
    return str(ext.id)


async def test_decisions_refusals_and_latency(reader: InMemoryMetricReader) -> None:
    world, _ = await new_world()
    ext_id = await _request(world)
    with pytest.raises(ExtensionError):
        await _request(world)  # the session is paused while one is pending
    with pytest.raises(ExtensionError):
        await world.service.respond_to_extension(
            extension_id=ext_id, session_id="s1", mitra_id="intruder", accepted=True
        )
    await world.service.respond_to_extension(
        extension_id=ext_id, session_id="s1", mitra_id="m1", accepted=True
    )
    decisions = points(reader, "extension_fsm.decisions")
    assert decisions[(("event", "RequestExtension"), ("outcome", "applied"))] == 1
    assert decisions[(("event", "RequestExtension"), ("outcome", "refused"))] == 1
    assert decisions[(("event", "RespondToExtension"), ("outcome", "applied"))] == 1
    assert decisions[(("event", "RespondToExtension"), ("outcome", "refused"))] == 1
    refusals = points(reader, "extension_fsm.refusals")
    assert refusals == {
        (("code", "SESSION_NOT_ACTIVE"), ("event", "RequestExtension")): 1,
        (("code", "FORBIDDEN"), ("event", "RespondToExtension")): 1,
    }
    latency = points(reader, "extension_fsm.unit_of_work.duration")
    assert latency[(("event", "RequestExtension"),)] == 2  # refused calls are timed too


async def test_lost_races_are_counted(reader: InMemoryMetricReader) -> None:
    memory = MemoryStore()
    world, _ = await new_world(store=memory)
    memory.fail_commits = 2
    await _request(world)
    assert points(reader, "extension_fsm.conflicts_retried") == {
        (("event", "RequestExtension"),): 2
    }


async def test_timeouts_record_their_lag_and_deliveries_their_result(
    reader: InMemoryMetricReader,
) -> None:
    world, _ = await new_world(use_timers=False)
    world.config.timeout_seconds = 10
    await _request(world)
    await world.clock.advance(25)
    (resolved,) = await world.service.sweep_due()
    assert resolved.via_timeout
    lag = reader.get_metrics_data()
    histograms = [
        p
        for rm in lag.resource_metrics  # type: ignore[union-attr]
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == "extension_fsm.timeout.lag"
        for p in m.data.data_points
    ]
    assert len(histograms) == 1 and histograms[0].count == 1
    assert histograms[0].sum == pytest.approx(15.0)  # resolved 15 s after its deadline
    deliveries = points(reader, "extension_fsm.outbox.deliveries")
    assert deliveries[(("channel", "notify"), ("result", "delivered"))] >= 2


async def test_backlog_gauges_follow_the_last_status(reader: InMemoryMetricReader) -> None:
    metrics.record_status(
        {"extensions": {"overdue": 4}, "outbox": {"waiting": 3, "retrying": 2, "dead": 1}}
    )
    assert points(reader, "extension_fsm.outbox.backlog") == {
        (("state", "waiting"),): 3,
        (("state", "retrying"),): 2,
        (("state", "dead"),): 1,
    }
    assert points(reader, "extension_fsm.extensions.overdue") == {(): 4}


async def test_without_a_provider_nothing_breaks() -> None:
    metrics.use_meter_provider(None)  # the API's global no-op provider
    world, _ = await new_world()
    await _request(world)
    await world.clock.advance(timedelta(minutes=5).total_seconds())
    assert metrics.enabled()


async def test_a_timeout_that_finds_nothing_to_do_counts_as_a_noop_of_its_event(
    reader: InMemoryMetricReader,
) -> None:
    world, _ = await new_world()  # the in-process timer resolves it
    world.config.timeout_action = TimeoutAction.AUTO_REJECT  # a timeout that asks no one
    ext_id = await _request(world)
    await world.clock.advance(world.config.timeout_seconds + 1)
    with pytest.raises(ExtensionError):  # too late: refused, and it hurries the timer
        await world.service.respond_to_extension(
            extension_id=ext_id, session_id="s1", mitra_id="m1", accepted=True
        )
    await world.clock.advance(0)  # the hurried timer times it out again: a noop
    decisions = points(reader, "extension_fsm.decisions")
    assert decisions[(("event", "TimeoutExtension"), ("outcome", "applied"))] == 1
    assert decisions[(("event", "TimeoutExtension"), ("outcome", "noop"))] == 1
    assert decisions[(("event", "RespondToExtension"), ("outcome", "refused"))] == 1


async def test_the_timer_and_the_sweep_record_the_same_timeout_metrics_by_path(
    reader: InMemoryMetricReader,
) -> None:
    """Both resolve through the one timeout path: a timeout applied, its lag
    under its path (timer | sweep), and its unit of work timed, whoever ran it."""
    timed, _ = await new_world()  # the in-process timer resolves it
    await _request(timed)
    await timed.clock.advance(timed.config.timeout_seconds + 1)
    swept, _ = await new_world(use_timers=False)
    await _request(swept)
    await swept.clock.advance(swept.config.timeout_seconds + 1)
    assert len(await swept.service.sweep_due()) == 1

    lag = points(reader, "extension_fsm.timeout.lag")
    assert lag == {(("path", "timer"),): 1, (("path", "sweep"),): 1}
    decisions = points(reader, "extension_fsm.decisions")
    assert decisions[(("event", "TimeoutExtension"), ("outcome", "applied"))] == 2
    latency = points(reader, "extension_fsm.unit_of_work.duration")
    assert latency[(("event", "TimeoutExtension"),)] == 2


async def test_a_timeout_that_loses_races_counts_each_retry_under_its_event(
    reader: InMemoryMetricReader,
) -> None:
    memory = MemoryStore()
    world, _ = await new_world(store=memory, use_timers=False)
    await _request(world)
    await world.clock.advance(world.config.timeout_seconds + 1)
    memory.fail_commits = 2
    (resolved,) = await world.service.sweep_due()
    assert resolved.via_timeout
    assert points(reader, "extension_fsm.conflicts_retried") == {
        (("event", "TimeoutExtension"),): 2
    }


async def test_timeouts_the_core_refuses_and_rows_not_yet_due_count_under_their_event(
    reader: InMemoryMetricReader, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One sweep: two rows the store's clock says are not due yet count as two
    noops, and a row the core refuses counts as a refusal, by its code."""
    world, _ = await new_world(use_timers=False)
    ids = await requests_due_in_turn(world, 3)
    refused = ids[0]
    read_one = RowSnapshots.for_timeout

    async def early_store_clock(self: RowSnapshots, extension_id: str) -> Snapshot:
        snapshot = await read_one(self, extension_id)
        ext = snapshot.extension
        if ext is None or ext.id == refused:
            return snapshot
        return replace(snapshot, now=ext.expires_at - timedelta(seconds=1))

    decide = core.decide

    def refuse_one(snapshot: Snapshot, event: Event, facts: Facts) -> Decision:
        if isinstance(event, TimeoutExtension) and event.extension_id == refused:
            raise ExtensionError(ErrorCode.INVALID_STATE, "cannot time it out")
        return decide(snapshot, event, facts)

    monkeypatch.setattr(RowSnapshots, "for_timeout", early_store_clock)
    monkeypatch.setattr(core, "decide", refuse_one)
    await world.clock.advance(world.config.timeout_seconds + 1)

    assert await world.service.sweep_due() == []

    decisions = points(reader, "extension_fsm.decisions")
    assert decisions[(("event", "TimeoutExtension"), ("outcome", "noop"))] == 2
    assert decisions[(("event", "TimeoutExtension"), ("outcome", "refused"))] == 1
    refusals = points(reader, "extension_fsm.refusals")
    assert refusals == {(("code", "INVALID_STATE"), ("event", "TimeoutExtension")): 1}
