"""The entry point: run every case, write RESULTS.md (+ plots, + JSON)."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

from . import (
    backlog,
    core_cases,
    growth_case,
    http_case,
    lateness,
    load_case,
    memory_cases,
    pg,
    pg_calls,
    sql_cases,
    sweep_cases,
    timeline_cases,
)
from .harness import Result, Sizes
from .report import readme_table, update_readme, write_report

HERE = Path(__file__).resolve().parent


def _versions() -> dict[str, str]:
    names = [
        "transitions",
        "SQLAlchemy",
        "psycopg",
        "asyncpg",
        "aiosqlite",
        "matplotlib",
    ]
    found = {"python": platform.python_version()}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def _machine() -> dict[str, str]:
    import os
    import sqlite3

    info = {
        "platform": platform.platform(),
        "cpus": str(os.cpu_count()),
        "sqlite": sqlite3.sqlite_version,
    }
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if "model name" in ln), "")
        info["cpu"] = model
    except OSError:
        pass
    if pg.available() is None:
        import psycopg

        with psycopg.connect(pg.admin_url()) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            info["postgresql"] = str(row[0]) if row else "?"
    return info


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks; exit status 1 if any case failed its own correctness check."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (CI): checks, not speed")
    parser.add_argument(
        "--out",
        type=Path,
        help="directory for RESULTS.md, plots and JSON "
        "(default: bench/ for a full run, a temporary directory for --quick)",
    )
    parser.add_argument("--only", help="comma-separated substrings of case names to run")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="measure nothing: write RESULTS.md again from results.json (after editing "
        "ANALYSIS.md)",
    )
    parser.add_argument(
        "--readme-table",
        action="store_true",
        help="measure nothing: print the README's highlights table from results.json",
    )
    parser.add_argument(
        "--readme",
        action="store_true",
        help="measure nothing: rewrite the README's highlights table from results.json",
    )
    args = parser.parse_args(argv)
    if args.report_only or args.readme_table or args.readme:
        out = args.out or HERE
        saved = json.loads((out / "results.json").read_text())
        fields = set(Result.__dataclass_fields__)
        again = [Result(**{k: v for k, v in r.items() if k in fields}) for r in saved["results"]]
        if args.readme_table:
            print(readme_table(again))
            return 0
        if args.readme:
            readme = HERE.parent / "README.md"
            readme.write_text(update_readme(readme.read_text(), again, saved["meta"]))
            print(f"[bench] rewrote the table in {readme}", file=sys.stderr)
            return 0
        write_report(out, again, saved["meta"])
        print(f"[bench] wrote {out / 'RESULTS.md'} from results.json", file=sys.stderr)
        return 0
    sizes = Sizes.small() if args.quick else Sizes.full()
    out = args.out or (Path(tempfile.mkdtemp(prefix="efsm_bench_")) if args.quick else HERE)
    out.mkdir(parents=True, exist_ok=True)

    results: list[Result] = []
    pg_missing = pg.available()
    started = time.perf_counter()
    load_at_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="efsm_bench_") as tmpdir:
        tmp = Path(tmpdir)
        cases: list[tuple[str, Callable[[], Result | list[Result]]]] = [
            ("core decision", lambda: core_cases.core_decision(sizes)),
            ("memory", lambda: memory_cases.memory(sizes)),
            ("sqlite accept", lambda: sql_cases.sqlite_accept(sizes, tmp)),
            ("sqlite sweep", lambda: sweep_cases.sqlite_sweep(sizes, tmp)),
            ("memory random timelines", lambda: timeline_cases.memory_timelines(sizes)),
            ("sqlite random timelines", lambda: timeline_cases.sqlite_timelines(sizes, tmp)),
            (
                "sqlite accept under contention",
                lambda: sql_cases.sqlite_accept(sizes, tmp, contended=True),
            ),
        ]
        if pg_missing is None:  # each PostgreSQL case creates and drops its own database
            cases += [
                ("postgres accept", lambda: sql_cases.pg_accept(sizes)),
                ("postgres round trips", pg_calls.round_trips),
                ("http vs raw app", lambda: http_case.http_vs_raw(sizes)),
                ("postgres backlog", lambda: backlog.backlog(sizes)),
                ("postgres lateness", lambda: lateness.lateness(sizes)),
                ("postgres sweep", lambda: sweep_cases.pg_sweep(sizes)),
                ("postgres growth", lambda: growth_case.pg_growth(sizes)),
                ("postgres random timelines", lambda: timeline_cases.pg_timelines(sizes)),
                # the same cases again with a busy process pinned on each core
                (
                    "postgres accept under contention",
                    lambda: sql_cases.pg_accept(sizes, contended=True),
                ),
                (
                    "http vs raw app under contention",
                    lambda: http_case.http_vs_raw(sizes, contended=True),
                ),
                (
                    "postgres backlog under contention",
                    lambda: backlog.backlog(sizes, contended=True),
                ),
                (
                    "postgres lateness under contention",
                    lambda: lateness.lateness(sizes, contended=True),
                ),
            ]
            if not sizes.quick:  # a real server and 50 clients: never in CI
                cases.append(("load", lambda: load_case.load_run()))
        for name, run in cases:
            if args.only and not any(s in name for s in args.only.split(",")):
                continue
            t0 = time.perf_counter()
            print(f"[bench] {name} ...", file=sys.stderr, flush=True)
            try:
                produced = run()
            except Exception as err:  # a broken case is reported, not hidden
                traceback.print_exc()
                produced = Result(
                    case=name,
                    ours=None,
                    baseline=None,
                    unit="",
                    baseline_name="",
                    target="",
                    limit=None,
                    error=f"{type(err).__name__}: {err}",
                )
            batch = produced if isinstance(produced, list) else [produced]
            for result in batch:
                result.extra.setdefault("seconds", round(time.perf_counter() - t0, 2))
                print(f"[bench]   {_line(result)}", file=sys.stderr, flush=True)
            results.extend(batch)
    elapsed = time.perf_counter() - started
    skipped = [pg_missing] if pg_missing else []
    meta = {
        "quick": sizes.quick,
        "seconds": round(elapsed, 1),
        "versions": _versions(),
        "machine": _machine(),
        "skipped": skipped,
        "load": [round(load_at_start, 2), round(os.getloadavg()[0], 2)],
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    (out / "results.json").write_text(
        json.dumps({"meta": meta, "results": [r.as_dict() for r in results]}, indent=2, default=str)
    )
    write_report(out, results, meta)
    print(f"[bench] wrote {out / 'RESULTS.md'} in {elapsed:.1f} s", file=sys.stderr)
    return 1 if any(r.error or not r.verified for r in results) else 0


def _line(r: Result) -> str:
    if r.error:
        return f"{r.case}: ERROR {r.error}"
    ours = "n/a" if r.ours is None else f"{r.ours:,.1f}"
    base = "n/a" if r.baseline is None else f"{r.baseline:,.1f}"
    ratio = "n/a" if r.ratio is None else f"{r.ratio:.2f}"
    return f"{r.case}: ours {ours} {r.unit}, baseline {base}, ratio {ratio}, met {r.met}"
