"""Run mutmut's mutants one by one against a few test files, each in a child
forked from a parent that has already imported pytest (a quick first pass
when ``mutmut run`` is too slow on a busy machine).

Usage, after ``mutmut run`` has generated ``mutants/`` (it may be stopped)::

    python tools/mutation_forkrun.py NAMES_FILE TEST...

``NAMES_FILE`` lists mutant names, one a line (``mutmut results --all true``).
``FORKRUN_DIR``: the folder holding ``mutants/`` (default: the current one).
``PAUSE_FILE``: while this file exists, no new mutant starts (to lend the
machine to a benchmark without counting a slowed mutant as a timeout).
``FORKRUN_PRELOAD=1``: import the library in the parent too (much faster;
never for machine.py, whose state machines are built at import time).
Prints ``NAME: killed|timeout|survived SECONDS`` per mutant.  A mutant the
tests kill is killed; recheck the survivors against the whole fast selection.
"""

from __future__ import annotations

import os
import signal
import sys
import time

import pytest

TIMEOUT = 120  # seconds a mutant's tests may take before it counts as a timeout


def wait_while_paused() -> None:
    pause = os.environ.get("PAUSE_FILE")
    while pause and os.path.exists(pause):
        time.sleep(5)


def run_one(name: str, tests: list[str]) -> str:
    wait_while_paused()
    pid = os.fork()
    if pid == 0:
        os.environ["MUTANT_UNDER_TEST"] = name
        signal.alarm(TIMEOUT)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        code = pytest.main(["-x", "-q", "-p", "no:randomly", "-p", "no:cacheprovider", *tests])
        os._exit(int(code))
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return "timeout" if os.WTERMSIG(status) == signal.SIGALRM else "killed"
    return "survived" if os.WEXITSTATUS(status) == 0 else "killed"


def main() -> int:
    names_file, *tests = sys.argv[1:]
    with open(names_file) as f:
        names = f.read().split()
    os.chdir(os.path.join(os.environ.get("FORKRUN_DIR", "."), "mutants"))
    os.environ["HYPOTHESIS_PROFILE"] = "mutation"
    if os.environ.get("FORKRUN_PRELOAD"):
        sys.path[:0] = ["src", "."]
        import extension_fsm.service  # noqa: F401
    if run_one("none.nothing", tests) != "survived":  # no mutant active: must pass
        print("the tests fail with no mutant active", file=sys.stderr)
        return 1
    for name in names:
        started = time.monotonic()
        verdict = run_one(name, tests)
        print(f"{name}: {verdict} {time.monotonic() - started:.1f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
