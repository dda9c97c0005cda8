"""Shared test set-up: hypothesis profiles and the service-availability rule."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import pytest
from hypothesis import HealthCheck, settings

from extension_fsm.outbox import BACKGROUND_TASK_NAME
from tests.ci import IN_CI

settings.register_profile(
    "ci",
    max_examples=500,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile(
    "dev",
    max_examples=100,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
# Mutation testing (tools/mutation.sh): few, fixed examples, so each mutant's run
# is short and the score is the same on every run.
settings.register_profile(
    "mutation",
    max_examples=20,
    stateful_step_count=20,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if IN_CI else "dev"))


@pytest.fixture(autouse=True)
async def _background_deliveries_end_with_the_test() -> AsyncIterator[None]:
    """A call's outbox rows are delivered by a background task; a test that does
    not wait for them (it checks rows, not deliveries) must not leave them
    running into the next test's loop: wait for them (bounded), then cancel."""
    yield
    tasks = [
        t for t in asyncio.all_tasks() if t.get_name() == BACKGROUND_TASK_NAME and not t.done()
    ]
    if tasks:
        # Usually these ended already: a SQL store's aclose() waits for the work
        # holding a connection and refuses new work (a late delivery fails fast).
        _, late = await asyncio.wait(tasks, timeout=60)
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late)
