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
(the ``cli`` extra) is imported here only: for the table view, and for the
progress bar and colours of ``--random``, which runs without it.

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
import secrets
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from . import __version__, ops_cli
from .adapters.memory import MemoryStore
from .database_url import Failure, check_sqlite_file, failure
from .payloads import messages_schema
from .ports import InspectableStore
from .simulator.diagram import FORMATS, render
from .simulator.expect import mismatches
from .simulator.randomize import play_random
from .simulator.scenario import ScenarioError, ScenarioFile, load_scenario
from .simulator.sequence import sequence_diagram
from .simulator.timeline import AlreadyInStore, RunResult, run_scenario

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
async def opened_store(url: str, *, reuse: bool = False) -> AsyncIterator[InspectableStore]:
    """The store ``url`` names, closed on exit: ``memory`` or an SQLAlchemy URL.

    Its tables are created when missing.  Unless ``reuse``, a database that
    already holds anything (a table that is not the library's, or a row in
    one that is) is refused (:class:`StoreUnavailable`) before anything is
    written to it.
    """
    if url == "memory":
        yield MemoryStore()
        return
    if url.split(":", 1)[0].split("+", 1)[0] not in _SQL_SCHEMES:
        raise StoreUnavailable(f"unsupported --db {url!r} (memory, sqlite://…, postgresql://…)")
    store_class = _sql_store_class()
    if store_class is None:
        raise StoreUnavailable(f"--db {url} needs {_SQL_MODULE} (pip install 'extension-fsm[sql]')")
    try:
        check_sqlite_file(url, creates=True)  # a new file, yes; in a missing directory, no
    except Failure as err:
        raise StoreUnavailable(str(err)) from None
    try:
        # The CLI drives virtual time: deadlines by its clock, not the database's.
        store = await store_class.open(url, clock="local")
    except Exception as err:  # a driver's error, shown as one line
        raise StoreUnavailable(str(failure(err, url))) from None
    try:
        try:
            held = [] if reuse else await _held(store)
            if not held:
                await store.create_schema()
        except Exception as err:  # a driver's error, shown as one line
            raise StoreUnavailable(str(failure(err, url))) from None
        if held:
            shown = "; ".join(held[:3]) + (f"; {len(held) - 3} more" if len(held) > 3 else "")
            raise StoreUnavailable(
                f"--db {url} already holds data ({shown}); simulate writes its tables "
                "and rows there: give it an empty database, or add --reuse-db"
            )
        yield store
    finally:
        await store.aclose()


#: the table the library's migrations are recorded in (no table prefix here)
_VERSION_TABLE = "extension_fsm_version"


async def _held(store: Any) -> list[str]:
    """What the database behind ``store`` holds besides the library's empty tables:
    each foreign table, and each library table with rows (and how many)."""
    from sqlalchemy import func, inspect, select

    ours = {t.name: t for t in store.tables.metadata.sorted_tables}

    def look(conn: Any) -> list[str]:
        names = sorted(inspect(conn).get_table_names())
        held = [f"table {n}" for n in names if n not in ours and n != _VERSION_TABLE]
        for name in names:
            if name in ours:
                rows = conn.execute(select(func.count()).select_from(ours[name])).scalar_one()
                held += [f"{rows} row(s) in {name}"] if rows else []
        return held

    found: list[str] = await store.database.run_sync(look)
    return found


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
            "default for --random: 'memory'. A database given here is written to: "
            "the library's tables are created in it and every timeline's rows are "
            "left there. It must be empty (no other tables, no rows) unless "
            "--reuse-db is given"
        ),
    )
    sim.add_argument(
        "--reuse-db",
        action="store_true",
        help=(
            "play into a --db database that already holds data (an earlier run's "
            "rows, other tables); random timelines get ids of their own, a scenario "
            "file's session must not be there yet"
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
    if args.reuse_db and args.db in (None, "memory", "sqlite://"):
        return _usage("--reuse-db goes with --db naming a database that outlives the run")
    if args.json and args.format not in (None, "json"):
        return _usage(f"--json means --format json, not --format {args.format}")
    fmt = "json" if args.json else args.format or "table"
    if args.random is not None and args.format is not None:
        return _usage("--format shows one scenario's run; --random N prints a summary")
    if args.random is not None and args.json:
        return _usage("--json prints one scenario's document; --random N prints a summary")
    if args.random is None and fmt == "table" and not _has_rich():
        return _usage(
            "the table view needs pip install 'extension-fsm[cli]' (or use --format json)"
        )
    try:
        if args.random is not None:
            if args.random < 1:
                return _usage("--random N needs N >= 1")
            return asyncio.run(
                _random(
                    args.random,
                    args.seed or 0,
                    args.db or "memory",
                    args.out or ".",
                    reuse=args.reuse_db,
                )
            )
        return asyncio.run(
            _simulate(args.scenario, args.db or default_db(), fmt, reuse=args.reuse_db)
        )
    except (ScenarioError, StoreUnavailable, AlreadyInStore) as err:
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


async def _simulate(path: str, db: str, fmt: str, *, reuse: bool) -> int:
    scenario = load_scenario(path)
    async with opened_store(db, reuse=reuse) as store:
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


async def _random(n: int, seed: int, db: str, out: str, *, reuse: bool) -> int:
    with _progress(n, seed) as played:
        if db == "memory":  # a fresh store per timeline: nothing to share
            run = await play_random(n, seed, out=out, played=played)
        else:  # one database for the run; ids of the run's own
            async with opened_store(db, reuse=reuse) as store:
                prefix = f"r{seed}-{secrets.token_hex(3)}-"
                run = await play_random(n, seed, store=store, prefix=prefix, out=out, played=played)
    say = _printer()
    summary = ", ".join(f"{k} {v}" for k, v in sorted(run.stats.items()))
    say(f"{n} random timelines, seed {seed}, db {db}: {summary}", None)
    for path, why in run.failed:
        say(f"FAILED {why}\n  replay: extension-fsm simulate {path}", "red")
    if run.failed:
        say(f"{len(run.failed)} of {n} timelines broke an invariant", "red")
    for violation in run.store_violations:
        say(f"the database as a whole: {violation}", "red")
    if not run.ok:
        return 1
    say("every invariant held", "green")
    return 0


@contextmanager
def _progress(n: int, seed: int) -> Iterator[Callable[[], None]]:
    """A callback to call after each timeline: a progress bar on stderr (the count,
    the rate, the time left) when stderr is a terminal and ``rich`` is installed;
    otherwise nothing is shown."""
    try:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )
    except ImportError:
        yield lambda: None
        return
    console = Console(stderr=True)
    if not console.is_terminal:
        yield lambda: None
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TextColumn("left"),
        TimeRemainingColumn(),
    )
    start = time.monotonic()
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(f"random timelines (seed {seed})", total=n, rate="")
        done = 0

        def played() -> None:
            nonlocal done
            done += 1
            rate = done / max(time.monotonic() - start, 1e-9)
            bar.update(task, advance=1, rate=f"{rate:.1f} timelines/s")

        yield played


def _printer() -> Callable[[str, str | None], None]:
    """Print a line, in colour through ``rich`` when it is installed, plain otherwise."""
    try:
        from rich.console import Console
    except ImportError:
        return lambda text, style: print(text)
    console = Console(soft_wrap=True)
    return lambda text, style: console.print(text, style=style, markup=False, highlight=False)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
