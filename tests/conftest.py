"""Shared test set-up: hypothesis profiles and the service-availability rule."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

from tests.ci import IN_CI

__all__ = ["IN_CI"]  # kept for older imports; import it from ``tests.ci``

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
