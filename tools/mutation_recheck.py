"""Recheck mutants by applying each to the source and running the whole fast
test selection (not only the tests mutmut linked to the mutated function).

mutmut links a mutant to the tests that called its function while it
collected stats; code that only runs at import (the state machines built in
machine.py) is called by no test, so its mutants would run no test or the
wrong ones.  Usage, in the folder of a finished mutmut run::

    python tools/mutation_recheck.py survived "no tests"   # the statuses to recheck

``RECHECK_ONLY=FILE``: only the mutant names listed in FILE (one a line).
``RECHECK_TESTS="a.py b.py"``: run these tests instead of the whole fast
selection (a quicker first pass over many mutants: what it kills is killed;
recheck what it leaves against the whole selection).

Prints ``NAME: killed`` or ``NAME: survived`` per mutant; restores each file.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TESTS = [  # as pytest_add_cli_args_test_selection in pyproject.toml
    "tests/unit",
    "tests/property/test_races_memory.py",
    "tests/integration/test_storable_ids.py"
    "::test_ids_a_database_cannot_hold_are_a_422_and_write_nothing[memory]",
    "tests/integration/test_late_answers.py"
    "::test_a_late_reject_ends_the_extension_uncharged_never_approved[memory]",
    "tests/integration/test_late_answers.py::test_a_late_accept_lets_the_deadline_decide[memory]",
    "tests/integration/test_late_answers.py"
    "::test_a_reject_after_the_timeout_resolved_it_changes_nothing[memory]",
]


def mutants_with(statuses: set[str]) -> list[str]:
    out = subprocess.run(
        ["mutmut", "results", "--all", "true"], capture_output=True, text=True, check=True
    ).stdout
    names = []
    for line in out.splitlines():
        name, _, status = line.strip().rpartition(": ")
        if name and status in statuses:
            names.append(name)
    return names


def source_of(name: str) -> Path:
    module = name.split(".x", 1)[0]  # extension_fsm.machine.xǁStateMachineǁ...
    return Path("src", *module.split(".")).with_suffix(".py")


def main() -> int:
    statuses = set(sys.argv[1:]) or {"survived", "no tests"}
    only = os.environ.get("RECHECK_ONLY")  # a file of mutant names, one a line
    wanted = set(Path(only).read_text().split()) if only else None
    tests = os.environ.get("RECHECK_TESTS", "").split() or TESTS
    env = {**os.environ, "HYPOTHESIS_PROFILE": "mutation"}
    for name in mutants_with(statuses):
        if wanted is not None and name not in wanted:
            continue
        path = source_of(name)
        original = path.read_text()
        try:
            subprocess.run(["mutmut", "apply", name], check=True, capture_output=True)
            done = subprocess.run(
                [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:randomly", *tests],
                capture_output=True,
                env=env,
                check=False,
            )
        finally:
            path.write_text(original)
        print(f"{name}: {'killed' if done.returncode != 0 else 'survived'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
