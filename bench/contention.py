"""Contention on purpose: busy processes pinned on the machine's cores.

In production the library shares its cores with a web server and more; a
case measured on an idle machine hides how its Python work degrades when the
CPU is contended.  :func:`busy_cores` starts one pure-Python busy loop per core
(``os.sched_setaffinity``), at normal priority, for the block it wraps, then
stops them.  Each loop also stops by itself after ``max_seconds`` or when the
benchmark process goes away, so a crashed run never leaves them behind.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from .cpu import proc_cpu_seconds

CONTENDED = ", under contention"
"""The suffix of a case name measured inside :func:`busy_cores`."""

# The loop a busy process runs: pinned to its core, until told, timed out or orphaned.
_BUSY = """
import os, sys, time
core, max_s, parent = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
if hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {core})
end = time.monotonic() + max_s
while time.monotonic() < end and os.getppid() == parent:
    n = 0
    for i in range(200_000):
        n += i
"""


@dataclass
class Busy:
    """The busy processes of one :func:`busy_cores` block and what they burned."""

    pids: list[int]
    cores: list[int]
    started: float = field(default_factory=time.perf_counter)
    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0

    def note(self) -> str:
        """One line for a case's notes: proof the contention was there."""
        share = self.cpu_seconds / self.wall_seconds if self.wall_seconds else 0.0
        return (
            f"under contention: {len(self.pids)} busy Python processes pinned one per core "
            f"(cores {', '.join(map(str, self.cores))}) for the measured part; they burned "
            f"{share:.2f} CPU-seconds per wall second over {self.wall_seconds:.1f} s"
        )


def _cores() -> list[int]:
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


@contextmanager
def busy_cores(count: int | None = None, *, max_seconds: float = 900.0) -> Iterator[Busy]:
    """Run ``count`` busy processes (default: one per core this process may use)."""
    cores = _cores()
    cores = (cores * ((count or len(cores)) // len(cores) + 1))[: count or len(cores)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _BUSY, str(core), str(max_seconds), str(os.getpid())],
            stdin=subprocess.DEVNULL,
        )
        for core in cores
    ]
    for p, core in zip(procs, cores, strict=True):  # pinned now, not once it has started
        if hasattr(os, "sched_setaffinity"):
            with contextlib.suppress(OSError):
                os.sched_setaffinity(p.pid, {core})
    busy = Busy(pids=[p.pid for p in procs], cores=cores)
    try:
        yield busy
    finally:
        busy.wall_seconds = time.perf_counter() - busy.started
        busy.cpu_seconds = sum(proc_cpu_seconds(p.pid) or 0.0 for p in procs)
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)
