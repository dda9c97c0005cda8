"""``extension-fsm``: play timelines on a virtual clock, draw the machines,
and operate a deployment.

``extension-fsm simulate SCENARIO [--format table|json|sequence] [--db URL]`` plays one
scenario file (``--json`` is ``--format json``);
``extension-fsm simulate --random N --seed S`` plays N random timelines;
``extension-fsm diagram [--format mermaid|dot]`` prints both state machines;
``extension-fsm schema scenario|messages`` prints a JSON Schema;
``db``, ``status``, ``history``, ``outbox retry-dead`` and ``worker`` are the operator's
(:mod:`extension_fsm.ops_cli`).

Exit status: 0 when every invariant held (and the file's ``expect`` matched),
1 when one did not (printed), 2 for a bad scenario file or command line, or a
missing extra (one line on stderr naming it, never a traceback).  ``rich``
(the ``cli`` extra) is imported here only, and only for the table views.

This module stays at the top of the package, outside
:mod:`extension_fsm.simulator`: it is the one console entry point for two
products, the simulator's commands and the operator's, and the library never
imports it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from . import __version__, ops_cli
from .adapters.memory import MemoryStore
from .payloads import messages_schema
from .ports import InspectableStore
from .simulator.diagram import FORMATS, render
from .simulator.expect import mismatches
from .simulator.randomize import namespaced, random_scenario
from .simulator.scenario import ScenarioError, ScenarioFile, load_scenario, parse_scenario
from .simulator.sequence import sequence_diagram
from .simulator.timeline import RunResult, run_scenario

__all__ = ["StoreUnavailable", "default_db", "main", "opened_store"]

_SQL_MODULE = "extension_fsm.adapters.sqlalchemy"
_SQL_SCHEMES = ("sqlite", "postgresql", "postgres")


class StoreUnavailable(Exception):
    """``--db`` names a store this installation cannot open."""


def _sql_store_class() -> Any:
    try:  # the ``sql`` extra (SQLAlchemy, aiosqlite) may not be installed
        from .adapters.sqlalchemy import SqlAlchemyStore
    except ImportError:
        return None
    return SqlAlchemyStore


def default_db() -> str:
    """``sqlite://`` (a fresh in-memory SQLite database) when the SQL adapter is
    installed, else ``memory``."""
    return "sqlite://" if _sql_store_class() is not None else "memory"


@asynccontextmanager
async def opened_store(url: str) -> AsyncIterator[InspectableStore]:
    """The store ``url`` names, closed on exit: ``memory`` or an SQLAlchemy URL."""
    if url == "memory":
        yield MemoryStore()
        return
    if url.split(":", 1)[0].split("+", 1)[0] not in _SQL_SCHEMES:
        raise StoreUnavailable(f"unsupported --db {url!r} (memory, sqlite://…, postgresql://…)")
    store_class = _sql_store_class()
    if store_class is None:
        raise StoreUnavailable(f"--db {url} needs {_SQL_MODULE} (pip install 'extension-fsm[sql]')")
    try:
        # The CLI drives virtual time: deadlines by its clock, not the database's.
        store = await store_class.open(url, create_schema=True, clock="local")
    except Exception as err:  # a driver's error, shown as one line
        raise StoreUnavailable(f"cannot open --db {url}: {type(err).__name__}: {err}") from None
    try:
        yield store
    finally:
        await store.aclose()


# --------------------------------------------------------------------- parser


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="extension-fsm",
        description=(
            "Play extension timelines on a virtual clock; draw the state machines; "
            "migrate, watch and run a deployment (db, status, history, outbox, worker)."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    sim = sub.add_parser(
        "simulate",
        help="play a scenario file, or N random timelines",
        description=(
            "Play a scenario file (.json or .toml) on a virtual clock and print the "
            "timeline, or play N random timelines. Exit 0 when every invariant holds "
            "(and the file's 'expect' matches), 1 when not, 2 for a bad scenario file."
        ),
    )
    sim.add_argument("scenario", nargs="?", help="scenario file (.json or .toml)")
    sim.add_argument(
        "--format",
        choices=("table", "json", "sequence"),
        help=(
            "table: the timeline (needs the cli extra); json: the result document; "
            "sequence: a Mermaid sequence diagram of the run (default table)"
        ),
    )
    sim.add_argument(
        "--json", action="store_true", help="the same as --format json (kept for scripts)"
    )
    sim.add_argument(
        "--db",
        metavar="URL",
        help=(
            "storage: 'memory', 'sqlite://' (in-memory SQLite), 'sqlite:///file.db' or "
            "'postgresql://…'. Default for a scenario file: 'sqlite://' when the SQL "
            f"adapter is installed, else 'memory' (here: {default_db()}); "
            "default for --random: 'memory'"
        ),
    )
    sim.add_argument("--random", type=int, metavar="N", help="play N random timelines")
    sim.add_argument("--seed", type=int, help="seed for --random (default 0)")
    sim.add_argument(
        "--out",
        metavar="DIR",
        help="where --random writes failing timelines as scenario files (default .)",
    )
    dia = sub.add_parser("diagram", help="print the extension and session state machines")
    dia.add_argument("--format", choices=FORMATS, default="mermaid")
    sch = sub.add_parser(
        "schema",
        help="print a JSON Schema: scenario files, or the wire messages",
        description=(
            "Print the JSON Schema of scenario files ('scenario') or of every socket "
            "frame, push payload and pending_extension ('messages')."
        ),
    )
    sch.add_argument("what", choices=("scenario", "messages"))
    ops_cli.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The ``extension-fsm`` console script; returns the exit status.

    A reader that stops early (``| head``) ends the command quietly: exit 1,
    as Python itself does on a closed pipe, without a traceback."""
    try:
        status = _main(argv)
        sys.stdout.flush()  # here, not at exit, where a closed pipe is a traceback
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the interpreter's last flush goes nowhere
        return 1
    return status


def _main(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "diagram":
        sys.stdout.write(render(args.format))
        return 0
    if args.command == "schema":
        schema = ScenarioFile.model_json_schema() if args.what == "scenario" else messages_schema()
        print(json.dumps(schema, indent=2, ensure_ascii=False))
        return 0
    if args.command != "simulate":
        return ops_cli.run(args)
    if (args.scenario is None) == (args.random is None):
        return _usage("simulate takes a SCENARIO file or --random N (one of them)")
    if args.random is None and (args.seed is not None or args.out is not None):
        return _usage("--seed and --out go with --random N, not with a scenario file")
    if args.json and args.format not in (None, "json"):
        return _usage(f"--json means --format json, not --format {args.format}")
    fmt = "json" if args.json else args.format or "table"
    if args.random is not None and args.format is not None:
        return _usage("--format shows one scenario's run; --random N prints a summary")
    if args.random is not None and args.json:
        return _usage("--json prints one scenario's document; --random N prints a summary")
    if (args.random is not None or fmt == "table") and not _has_rich():
        return _usage(
            "the table view needs pip install 'extension-fsm[cli]' (or use --format json)"
        )
    try:
        if args.random is not None:
            if args.random < 1:
                return _usage("--random N needs N >= 1")
            return asyncio.run(
                _random(args.random, args.seed or 0, args.db or "memory", args.out or ".")
            )
        return asyncio.run(_simulate(args.scenario, args.db or default_db(), fmt))
    except (ScenarioError, StoreUnavailable) as err:
        return _usage(str(err))


def _has_rich() -> bool:
    try:
        import rich  # noqa: F401
    except ImportError:
        return False
    return True


def _usage(message: str) -> int:
    print(f"extension-fsm: {message}", file=sys.stderr)
    return 2


# ------------------------------------------------------------------- simulate


async def _simulate(path: str, db: str, fmt: str) -> int:
    scenario = load_scenario(path)
    async with opened_store(db) as store:
        result = await run_scenario(scenario, store)
    missed = mismatches(scenario.expect, result.document) if scenario.expect else []
    if fmt == "table":
        _print_run(result, missed, db)
        return 0 if result.ok and not missed else 1
    if fmt == "json":
        print(json.dumps(result.document, indent=2, ensure_ascii=False))
    else:
        sys.stdout.write(sequence_diagram(result))
    for line in [*result.violations, *(f"expect: {m}" for m in missed)]:
        print(line if line.startswith("expect: ") else f"invariant: {line}", file=sys.stderr)
    return 0 if result.ok and not missed else 1


def _print_run(result: RunResult, missed: list[str], db: str) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:
        console = Console(width=160)
    sc = result.scenario
    title = f"{sc.source} (db {db})" + (f": {sc.description}" if sc.description else "")
    table = Table(title=title, show_lines=True, title_justify="left")
    for name, style in (
        ("time", "cyan"),
        ("actor", "magenta"),
        ("event", "bold"),
        ("states", ""),
        ("deliveries", ""),
        ("errors", "red"),
    ):
        table.add_column(name, style=style, justify="right" if name == "time" else "left")
    for row in result.rows:
        event = row.event + "".join(f"\n[dim]{c}[/dim]" for c in row.changes)
        sent = "\n".join(
            f"{d.channel}→{d.to} {d.type}"
            if d.taken
            else f"[dim]{d.channel}→{d.to} {d.type} ✗[/dim]"
            for d in row.deliveries
        )
        table.add_row(
            f"{row.at:g}s", row.actor, event, row.states.replace(" · ", "\n"), sent, row.error or ""
        )
    console.print(table)
    console.print("[dim]deliveries: ✗ = no socket took it (a push follows if it has one)[/dim]")
    doc = result.document
    for ext in doc["extensions"]:  # type: ignore[union-attr]
        assert isinstance(ext, dict)
        via = " by the deadline" if ext["via_timeout"] else ""
        via += f" ({ext['reason']})" if ext["reason"] else ""
        console.print(
            f"extension {str(ext['id'])[:8]}: [bold]{ext['status']}[/bold]{via}, "
            f"+{ext['duration_minutes']} min for {ext['price']}, resolved at {ext['resolved_at']}s"
        )
    session = doc["session"]
    assert isinstance(session, dict)
    console.print(
        f"session {session['id']}: [bold]{session['status']}[/bold], "
        f"expires at {session['expires_at']}s"
    )
    for payment in doc["payments"]:  # type: ignore[union-attr]
        assert isinstance(payment, dict)
        cause = f" ({payment['failure_cause']})" if payment["failure_cause"] else ""
        console.print(f"payment {payment['id']}: {payment['status']}{cause}")
    charged = [t["amount"] for t in doc["transactions"]]  # type: ignore[union-attr,index,call-overload]
    console.print(f"ledger: {len(charged)} extension charge(s) {charged}")
    if result.ok:
        console.print("[green]invariants: all hold[/green]")
    else:
        console.print("[red]invariants violated:[/red]")
        for violation in result.violations:
            console.print(f"  {violation}", style="red", markup=False)
    if missed:
        console.print("[red]expect: the run differs from the file's expectations:[/red]")
        for line in missed:
            console.print(f"  {line}", markup=False, style="red")
    elif sc.expect:
        console.print("[green]expect: matches[/green]")


# --------------------------------------------------------------------- random


async def _random(n: int, seed: int, db: str, out: str) -> int:
    from rich.console import Console
    from rich.progress import Progress

    stats: Counter[str] = Counter()
    failed: list[tuple[Path, str]] = []
    unique_ids = db not in ("memory", "sqlite://")  # a persistent database keeps old rows
    with Progress(console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task(f"random timelines (seed {seed})", total=n)
        for i in range(n):
            doc = random_scenario(random.Random(f"{seed}:{i}"))
            if unique_ids:
                doc = namespaced(doc, f"r{seed}-{i}-{random.randrange(10**9)}-")
            result = await _play_random(doc, i, db)
            _tally(stats, result)
            if not result.ok:
                doc["description"] = f"random timeline {i} of seed {seed}: {result.violations[0]}"
                failed.append((_write_failure(doc, out, seed, i), result.violations[0]))
            progress.advance(task)
    console = Console()
    summary = ", ".join(f"{k} {v}" for k, v in sorted(stats.items()))
    console.print(f"{n} random timelines, seed {seed}, db {db}: {summary}")
    for path, why in failed:
        console.print(f"[red]FAILED[/red] {why}\n  replay: extension-fsm simulate {path}")
    if failed:
        console.print(f"[red]{len(failed)} of {n} timelines broke an invariant[/red]")
        return 1
    console.print("[green]every invariant held[/green]")
    return 0


async def _play_random(doc: dict[str, Any], i: int, db: str) -> RunResult:
    scenario = parse_scenario(doc, f"random timeline {i}")
    async with opened_store(db) as store:
        return await run_scenario(scenario, store)


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


def _write_failure(doc: dict[str, Any], out: str, seed: int, i: int) -> Path:
    directory = Path(out)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"failed-seed{seed}-{i}.json"
    path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return path


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
