"""Random timelines for ``extension-fsm simulate --random``.

Each timeline is an ordinary scenario document (the same format as the files
in ``examples/timelines``), so a failing one can be written out and replayed
as it is.  The mix covers the races the invariants of ``docs/design.md``
face: good and bad requests, answers (late, duplicate, from the wrong
mitra), presence and socket flaps, restarts that lose every timer, session
ends, config changes and explicit sweeps, at random moments around the answer deadlines.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..adapters.memory import MemoryStore
from ..invariants import check_invariants
from ..ports import InspectableStore
from .scenario import parse_scenario
from .timeline import RunResult, run_scenario

__all__ = ["RandomRun", "namespaced", "play_random", "random_scenario"]

_KINDS = (
    ("request", 24),
    ("accept", 12),
    ("reject", 8),
    ("mitra", 16),
    ("customer", 5),
    ("restart", 8),
    ("set_config", 8),
    ("end_session", 3),
    ("sweep", 6),
)


def random_scenario(rng: random.Random) -> dict[str, Any]:
    """One random scenario document drawn from ``rng``."""
    payments = [_payment(rng, i) for i in range(rng.randint(1, 6))]
    steps: list[dict[str, Any]] = []
    at = 0.0
    requests = 0
    kinds, weights = zip(*_KINDS, strict=True)
    for _ in range(rng.randint(2, 24)):
        at = round(at + rng.choice((0.0, 0.5, 1.0, 2.0, 3.0, 5.0, 9.5, 10.0, 12.0)), 1)
        do = rng.choices(kinds, weights)[0]
        step: dict[str, Any] = {"at": at, "do": do}
        if do == "request":
            step |= _request(rng, payments)
            requests += 1
        elif do in ("accept", "reject"):
            if requests and rng.random() < 0.4:
                step["extension"] = rng.randrange(requests)
            if rng.random() < 0.1:
                step["mitra_id"] = "m2"
        elif do == "mitra":
            for key in ("on_session_socket", "connected", "online"):
                if rng.random() < 0.5:
                    step[key] = rng.random() < 0.6
            if len(step) == 2:
                step["online"] = rng.random() < 0.5
        elif do == "customer":
            step["on_session_socket"] = rng.random() < 0.6
        elif do == "set_config":
            step |= _config(rng, partial=True)
        steps.append(step)
    scenario: dict[str, Any] = {
        "description": "random timeline",
        "config": _config(rng, partial=False),
        "session": {
            "id": "s1",
            "customer_id": "c1",
            "mitra_id": "m1",
            "status": rng.choice(("active", "active", "active", "closing")),
            "minutes_left": rng.choice((0.05, 0.25, 1, 5, 5)),
        },
        "payments": payments,
        "mitra": {k: rng.random() < 0.75 for k in ("on_session_socket", "connected", "online")},
        "customer": {"on_session_socket": rng.random() < 0.75},
        "steps": steps,
    }
    if rng.random() < 0.3:
        scenario["until"] = round(at + rng.choice((1.0, 30.0, 90.0, 400.0)), 1)
    return scenario


def _payment(rng: random.Random, i: int) -> dict[str, Any]:
    payment: dict[str, Any] = {"id": f"p{i + 1}", "amount": rng.choice((15000, 30000))}
    roll = rng.random()
    if roll < 0.06:
        payment["customer_id"] = "c2"
    elif roll < 0.12:
        payment["is_extension"] = False
    elif roll < 0.18:
        payment["first_session_discount"] = True
    elif roll < 0.24:
        payment["status"] = rng.choice(("pending", "consumed", "failed"))
    return payment


def _request(rng: random.Random, payments: list[dict[str, Any]]) -> dict[str, Any]:
    payment = rng.choice(payments)
    step: dict[str, Any] = {
        "duration_minutes": rng.choice((15, 30, 60))
        if rng.random() < 0.9
        else rng.choice((0, 2000)),
        "price": payment["amount"] if rng.random() < 0.92 else payment["amount"] + 1,
        "payment_id": payment["id"] if rng.random() < 0.93 else "p-missing",
    }
    if rng.random() < 0.05:
        step["customer_id"] = "c2"
    return step


def _config(rng: random.Random, *, partial: bool) -> dict[str, Any]:
    config = {
        "timeout_seconds": rng.choice((1, 5, 10, 15)),
        "timeout_action": rng.choice(("auto_approve", "auto_reject", "auto_approve", "whatever")),
        "grace_seconds": rng.choice((2, 10, 30, 60)),
    }
    if partial:
        keys = rng.sample(sorted(config), rng.randint(1, 3))
        return {k: config[k] for k in keys}
    return config


def namespaced(doc: dict[str, Any], prefix: str) -> dict[str, Any]:
    """``doc`` with its session and payment ids prefixed, for a database that
    keeps the rows of earlier timelines."""
    out = dict(doc)
    out["session"] = {**doc["session"], "id": prefix + doc["session"]["id"]}
    out["payments"] = [{**p, "id": prefix + p["id"]} for p in doc["payments"]]
    out["steps"] = [
        {**s, "payment_id": prefix + s["payment_id"]} if s.get("payment_id") else s
        for s in doc["steps"]
    ]
    return out


# ------------------------------------------------------------------- the run


@dataclass(slots=True)
class RandomRun:
    """What ``--random N`` found."""

    count: int
    seed: int
    #: steps played, extensions by outcome, refused calls
    stats: Counter[str] = field(default_factory=Counter)
    #: (the failing timeline written out, its first violation)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    #: the invariants over the whole shared store, read once at the end
    store_violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether every timeline, and the shared store as a whole, kept every invariant."""
        return not self.failed and not self.store_violations


async def play_random(
    n: int,
    seed: int,
    *,
    store: InspectableStore | None = None,
    prefix: str = "",
    out: str | Path = ".",
    played: Callable[[], None] = lambda: None,
) -> RandomRun:
    """Play ``n`` random timelines of ``seed``; ``played()`` after each one.

    Without ``store`` each timeline gets a fresh in-memory store.  With one,
    every timeline is played into it, its ids prefixed with ``prefix`` and
    its number; each step reads only its own timeline's rows, so the run
    costs the same per timeline however many the store already holds, and
    the whole store is read once at the end and checked as a whole.  A
    failing timeline is written to ``out`` as a scenario file that replays it.
    """
    run = RandomRun(n, seed)
    for i in range(n):
        doc = random_scenario(random.Random(f"{seed}:{i}"))
        if store is not None:
            doc = namespaced(doc, f"{prefix}{i}-")
        scenario = parse_scenario(doc, f"random timeline {i}")
        result = await run_scenario(scenario, store if store is not None else MemoryStore())
        _tally(run.stats, result)
        if not result.ok:
            doc["description"] = f"random timeline {i} of seed {seed}: {result.violations[0]}"
            run.failed.append((_write_failure(doc, out, seed, i), result.violations[0]))
        played()
    if store is not None:
        # Across timelines: no virtual clock is everyone's, so no liveness check.
        whole = await store.dump()
        run.store_violations = check_invariants(
            whole, now=datetime.now(UTC), require_delivered=True
        )
    return run


def _tally(stats: Counter[str], result: RunResult) -> None:
    doc = result.document
    stats["steps"] += len(result.scenario.steps)
    for ext in doc["extensions"]:  # type: ignore[union-attr]
        assert isinstance(ext, dict)
        kind = str(ext["status"])
        if ext["reason"]:
            kind += f" ({ext['reason']})"
        elif ext["via_timeout"]:
            kind += " by the deadline"
        stats[kind] += 1
    stats["refused calls"] += len(doc["errors"])  # type: ignore[arg-type]


def _write_failure(doc: dict[str, Any], out: str | Path, seed: int, i: int) -> Path:
    directory = Path(out)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"failed-seed{seed}-{i}.json"
    path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return path
