"""CPU time next to wall time: what a shared machine distorts least.

Wall time on a 2-core machine shared with other jobs moves with their load;
the CPU a piece of code burns for one operation moves much less.  A
:class:`Stopwatch` reads three clocks around a timed block:

- wall time (``time.perf_counter``),
- this Python process's CPU (``time.process_time``: every thread, user + system),
- optionally the CPU of the PostgreSQL backends serving the benchmark's
  database (``utime + stime`` from ``/proc/<pid>/stat`` of each client
  backend listed by ``pg_stat_activity``), when the server runs on this machine.
"""

from __future__ import annotations

import os
import sqlite3
import statistics
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from .harness import Result

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def proc_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` so far (``None``: not readable)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    # the command name (field 2) may hold spaces: split after its closing paren
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK  # fields 14 and 15 of stat(5)


class BackendCpu:
    """The CPU of the client backends connected to one PostgreSQL database.

    Reads the pids through ``conn`` (a psycopg connection in autocommit, itself
    one of those backends) and their CPU from ``/proc``. Backends that exit
    between two readings are counted up to the last reading only.
    """

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.readable = self._readable()

    def _pids(self) -> list[int]:
        rows = self.conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND backend_type = 'client backend'"
        ).fetchall()
        return [int(r[0]) for r in rows]

    def _readable(self) -> bool:
        row = self.conn.execute("SELECT pg_backend_pid()").fetchone()
        return row is not None and proc_cpu_seconds(int(row[0])) is not None

    def read(self) -> dict[int, float]:
        """CPU seconds so far per backend pid (empty when not on this machine)."""
        if not self.readable:
            return {}
        found: dict[int, float] = {}
        for pid in self._pids():
            cpu = proc_cpu_seconds(pid)
            if cpu is not None:
                found[pid] = cpu
        return found

    @staticmethod
    def spent(before: dict[int, float], after: dict[int, float]) -> float:
        """CPU seconds between two readings (a backend new since ``before`` counts whole)."""
        return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


class BackendPoller:
    """Reads the database's backends' CPU every ``every`` s in a thread (backends
    of a pool that closes connections exit mid-run: polling keeps most of theirs)."""

    def __init__(self, url: str, every: float = 0.25) -> None:
        self.conn = psycopg.connect(url, autocommit=True, connect_timeout=10)
        self.backends = BackendCpu(self.conn)
        self.every = every
        self.before = self.backends.read()
        self.latest = dict(self.before)
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.done.wait(self.every):
            self.latest.update(self.backends.read())

    def stop(self) -> float | None:
        """CPU seconds the backends spent since the start (``None``: unreadable)."""
        self.done.set()
        self.thread.join(timeout=10)
        self.latest.update(self.backends.read())
        self.conn.close()
        if not self.backends.readable:
            return None
        return BackendCpu.spent(self.before, self.latest)


@dataclass(frozen=True)
class Timing:
    """Seconds per operation on each clock (``server`` is ``None`` when not read)."""

    wall: float
    cpu: float
    server: float | None = None

    def plus(self, other: Timing) -> Timing:
        """Two operations done one after the other (e.g. a request, then an accept)."""
        server = None if self.server is None or other.server is None else self.server + other.server
        return Timing(self.wall + other.wall, self.cpu + other.cpu, server)

    @staticmethod
    def median(timings: Sequence[Timing]) -> Timing:
        """Each clock's median over repeats."""
        servers = [t.server for t in timings if t.server is not None]
        return Timing(
            wall=statistics.median(t.wall for t in timings),
            cpu=statistics.median(t.cpu for t in timings),
            server=statistics.median(servers) if len(servers) == len(timings) else None,
        )


class Stopwatch:
    """Wall, process CPU and (for a PostgreSQL connection) backend CPU of a block.

    ``Stopwatch.around(conn)`` picks the backend reader from the connection the
    case already holds: a psycopg connection gets one, ``sqlite3`` none.
    """

    def __init__(self, backends: BackendCpu | None = None) -> None:
        self.backends = backends
        self._wall = self._cpu = 0.0
        self._server: dict[int, float] = {}

    @classmethod
    def around(cls, conn: Any) -> Stopwatch:
        if conn is None or isinstance(conn, sqlite3.Connection):
            return cls()
        return cls(BackendCpu(conn))

    def start(self) -> Stopwatch:
        self._server = self.backends.read() if self.backends else {}
        self._cpu = time.process_time()
        self._wall = time.perf_counter()
        return self

    def stop(self, ops: int) -> Timing:
        """Per-operation timing of the block since :meth:`start`."""
        wall = time.perf_counter() - self._wall
        cpu = time.process_time() - self._cpu
        server = None
        if self.backends is not None and self.backends.readable:
            server = BackendCpu.spent(self._server, self.backends.read()) / ops
        return Timing(wall=wall / ops, cpu=cpu / ops, server=server)


def cpu_row(wall: Result, ours: Timing, base: Timing, *, informative: bool = False) -> Result:
    """The CPU-time row of a wall-time row: the same case, target and baseline
    (``informative``: no target), measured in this Python process's CPU per
    operation; the PostgreSQL backends' CPU, when read, goes into its notes and
    ``extra``."""
    notes = [
        "CPU of the Python process (time.process_time) per operation, same runs as the "
        "wall-time row"
    ]
    extra: dict[str, Any] = {}
    if ours.server is not None and base.server is not None:
        o_srv, b_srv = ours.server * 1e6, base.server * 1e6
        o_all, b_all = o_srv + ours.cpu * 1e6, b_srv + base.cpu * 1e6
        notes.append(
            f"PostgreSQL backends' CPU per operation: ours {o_srv:,.0f} µs, baseline "
            f"{b_srv:,.0f} µs ({_ratio(o_srv, b_srv)}); Python + PostgreSQL: ours "
            f"{o_all:,.0f} µs, baseline {b_all:,.0f} µs ({_ratio(o_all, b_all)}); "
            "/proc/<pid>/stat of the client backends, 10 ms ticks"
        )
        extra = {"server_us": [o_srv, b_srv], "total_us": [o_all, b_all]}
    return Result(
        case=f"{wall.case}, CPU time",
        ours=ours.cpu * 1e6,
        baseline=base.cpu * 1e6,
        unit=wall.unit.replace("µs/", "µs CPU/"),
        baseline_name=wall.baseline_name,
        target="informative" if informative else wall.target,
        limit=None if informative else wall.limit,
        at_most=wall.at_most,
        verified=wall.verified,
        notes=notes,
        extra=extra,
    )


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b > 0 else "n/a"
