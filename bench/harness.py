"""What every case shares: sizes, timing, the result row and its verdict."""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any


class CheckFailed(AssertionError):
    """The work a case timed was not done right: its numbers are void."""


def check(condition: bool, message: str) -> None:
    """Fail the case (not just an assert: it must hold under ``python -O`` too)."""
    if not condition:
        raise CheckFailed(message)


@dataclass(frozen=True)
class Sizes:
    """How big each case runs; ``quick`` keeps every case tiny."""

    quick: bool
    repeats: int
    core_ops: int
    memory_extensions: int
    sql_ops: int
    sweep_pending: int
    sweep_due: int
    backlog_due: int  # extensions past their deadline after an outage
    lateness_seconds: float  # the steady run of the lateness case
    growth_sizes: tuple[int, ...]
    http_sessions: int  # per HTTP run: each a request then an accept
    http_clients: int
    http_runs: int  # per app, alternating
    busy_max_s: float  # a contention block's busy processes stop by themselves after this
    random_timelines: int  # N: the same N random timelines first and again after 2N more

    @classmethod
    def full(cls) -> Sizes:
        return cls(
            quick=False,
            repeats=7,
            core_ops=20_000,
            memory_extensions=100_000,
            sql_ops=300,
            sweep_pending=100_000,
            sweep_due=1_000,
            backlog_due=20_000,
            lateness_seconds=60.0,
            growth_sizes=(10_000, 100_000, 1_000_000),
            http_sessions=600,
            http_clients=50,
            http_runs=3,
            busy_max_s=1800.0,
            random_timelines=50,
        )

    @classmethod
    def small(cls) -> Sizes:
        return cls(
            quick=True,
            repeats=3,
            core_ops=500,
            memory_extensions=2_000,
            sql_ops=30,
            sweep_pending=2_000,
            sweep_due=50,
            backlog_due=400,
            lateness_seconds=4.0,
            growth_sizes=(1_000, 5_000),
            http_sessions=10,
            http_clients=5,
            http_runs=1,
            busy_max_s=120.0,
            random_timelines=3,
        )


@dataclass
class Result:
    """One row of the results table.

    ``ratio`` is ``ours / baseline`` unless ``ratio_label`` says otherwise;
    ``met`` compares it with ``limit`` in the direction ``at_most``; any entry
    in ``failed`` (a part of the target besides the ratio, e.g. "zero 5xx")
    makes it missed.
    """

    case: str
    ours: float | None
    baseline: float | None
    unit: str
    baseline_name: str
    target: str
    limit: float | None
    at_most: bool = True
    ratio: float | None = None
    verified: bool = False
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.ratio is None and self.ours is not None and self.baseline:
            self.ratio = self.ours / self.baseline

    @property
    def met(self) -> bool | None:
        """Whether the target was met (``None``: not measured or no target)."""
        if self.ratio is None or self.limit is None or self.error:
            return None
        if self.failed:
            return False
        return self.ratio <= self.limit if self.at_most else self.ratio >= self.limit

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, with the verdict."""
        data = asdict(self)
        data["met"] = self.met
        return data


def median(values: list[float]) -> float:
    """The median (runs on a shared 2-core machine are noisy; the mean is not robust)."""
    return statistics.median(values)


def per_op(fn: Callable[[], object], ops: int) -> float:
    """Seconds per call of ``fn`` over ``ops`` calls."""
    start = time.perf_counter()
    for _ in range(ops):
        fn()
    return (time.perf_counter() - start) / ops


async def per_op_async(fn: Callable[[], Awaitable[object]], ops: int) -> float:
    """Seconds per awaited call of ``fn`` over ``ops`` calls."""
    start = time.perf_counter()
    for _ in range(ops):
        await fn()
    return (time.perf_counter() - start) / ops


def interleaved(
    repeats: int, ours: Callable[[], float], baseline: Callable[[], float]
) -> tuple[float, float]:
    """Median of ``repeats`` runs of each, alternating so drift hits both alike."""
    a: list[float] = []
    b: list[float] = []
    for i in range(repeats):
        if i % 2:
            a.append(ours())
            b.append(baseline())
        else:
            b.append(baseline())
            a.append(ours())
    return median(a), median(b)
