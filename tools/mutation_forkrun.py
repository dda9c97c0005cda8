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
``FORKRUN_TIMEOUT``: seconds a mutant's tests may take before it counts as a
timeout (default 120; a mutant that loops forever costs this much).
``FORKRUN_COLLECT_ONCE=1``: collect the tests once, in the parent, and fork a
child per mutant from inside that pytest session to run the collected items
(spares each mutant the plugins' imports and the collection: several times
faster; implies ``FORKRUN_PRELOAD``).  The children run the same items in the
same order with ``-x``, as in the default mode.  Not every selection passes
that way (the first, mutant-free run says so and stops): the whole fast
selection did not (tests/unit/test_core.py, test_layout.py and the like, that
never import the service, were left out when the service was measured).
The tests run are the copies in ``mutants/tests``: copy a new test there.
Prints ``NAME: killed|timeout|survived SECONDS`` per mutant.  A mutant the
tests kill is killed; recheck the survivors against the whole fast selection.
"""

from __future__ import annotations

import os
import signal
import sys
import time

import pytest

TIMEOUT = int(os.environ.get("FORKRUN_TIMEOUT", "120"))  # seconds before a timeout


def wait_while_paused() -> None:
    pause = os.environ.get("PAUSE_FILE")
    while pause and os.path.exists(pause):
        time.sleep(5)


def run_one(name: str, tests: list[str]) -> str:
    wait_while_paused()
    pid = os.fork()
    if pid == 0:
        os.environ["MUTANT_UNDER_TEST"] = name
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        code = pytest.main(["-x", "-q", "-p", "no:randomly", "-p", "no:cacheprovider", *tests])
        os._exit(int(code))
    return _wait(pid)


def _wait(pid: int) -> str:
    """The child's verdict; killed from here after ``TIMEOUT`` seconds (an alarm
    in the child would not do: pytest-timeout re-arms SIGALRM for each test)."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return _verdict(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return "timeout"
        time.sleep(0.05)


def _verdict(status: int) -> str:
    if os.WIFSIGNALED(status):
        return "killed"  # the tests crashed
    return "survived" if os.WEXITSTATUS(status) == 0 else "killed"


class _ForkPerMutant:
    """A pytest plugin: once the session has collected, run its items in one
    forked child per mutant (``none.nothing`` first: it must pass)."""

    def __init__(self, names: list[str], out: int) -> None:
        self.names = names
        self.out = out  # a duplicate of the real stdout: pytest captures fd 1
        self.failed_clean = False

    def _say(self, text: str) -> None:
        os.write(self.out, (text + "\n").encode())

    def _run(self, session: pytest.Session, name: str) -> str:
        wait_while_paused()
        pid = os.fork()
        if pid == 0:
            os.environ["MUTANT_UNDER_TEST"] = name
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            reporter = session.config.pluginmanager.get_plugin("terminalreporter")
            if reporter is not None:  # it writes to a saved copy of the real stdout
                session.config.pluginmanager.unregister(reporter)
            hook = session.config.hook
            items = session.items
            for i, item in enumerate(items):
                nextitem = items[i + 1] if i + 1 < len(items) else None
                hook.pytest_runtest_protocol(item=item, nextitem=nextitem)
                if session.shouldfail or session.shouldstop:
                    break
            os._exit(1 if session.testsfailed else 0)
        return _wait(pid)

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session: pytest.Session) -> bool:
        if self._run(session, "none.nothing") != "survived":
            self._say("the tests fail with no mutant active")
            self.failed_clean = True
            return True
        for name in self.names:
            started = time.monotonic()
            verdict = self._run(session, name)
            self._say(f"{name}: {verdict} {time.monotonic() - started:.1f}s")
        return True


def main() -> int:
    names_file, *tests = sys.argv[1:]
    with open(names_file) as f:
        names = f.read().split()
    os.chdir(os.path.join(os.environ.get("FORKRUN_DIR", "."), "mutants"))
    os.environ["HYPOTHESIS_PROFILE"] = "mutation"
    collect_once = bool(os.environ.get("FORKRUN_COLLECT_ONCE"))
    if os.environ.get("FORKRUN_PRELOAD") or collect_once:
        sys.path[:0] = ["src", "."]
        import extension_fsm.service  # noqa: F401
    if collect_once:
        os.environ["MUTANT_UNDER_TEST"] = "none.nothing"  # while collecting
        plugin = _ForkPerMutant(names, os.dup(1))
        args = ["-x", "-q", "-p", "no:randomly", "-p", "no:cacheprovider", *tests]
        pytest.main(args, plugins=[plugin])
        return 1 if plugin.failed_clean else 0
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
