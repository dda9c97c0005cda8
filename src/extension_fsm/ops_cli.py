"""The operator's subcommands of ``extension-fsm``: ``db``, ``status``,
``history``, ``outbox retry-dead`` and ``worker`` (wired into :mod:`extension_fsm.cli`).

Every one takes ``--db URL`` (default ``EXTENSION_FSM_DATABASE_URL``) and
``--table-prefix`` (default ``EXTENSION_FSM_TABLE_PREFIX``).  Exit status: 0
done, 1 the database or a service failed (one line on stderr), 2 a bad
command line or a missing extra (one line naming it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from dataclasses import dataclass
from typing import Any

from .database_url import (
    Failure,
    UsageError,
    check_sqlite_file,
    database_url,
    failure,
    one_line,
)

__all__ = ["add_parsers", "run"]

_ENV = "EXTENSION_FSM_"


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(_ENV + name) or default


@dataclass(frozen=True, slots=True)
class _BadEnv:
    """An integer variable that is not one, refused when the command runs."""

    variable: str
    value: str

    def __str__(self) -> str:
        return f"{self.variable}={self.value!r}: not an integer"


def _env_int(name: str, default: int | None = None) -> int | _BadEnv | None:
    # Converted here, not by argparse: argparse would refuse a bad default with
    # its usage text and the flag's name, not the variable's.
    raw = os.environ.get(_ENV + name)
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        return _BadEnv(_ENV + name, raw)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--db",
        metavar="URL",
        default=_env("DATABASE_URL"),
        help="sqlite:///file.db or postgresql://… (default: $EXTENSION_FSM_DATABASE_URL)",
    )
    p.add_argument(
        "--table-prefix",
        default=_env("TABLE_PREFIX", ""),
        metavar="P",
        help="the tables' prefix (default: $EXTENSION_FSM_TABLE_PREFIX or none)",
    )
    p.add_argument(
        "--layout",
        choices=("default", "seed"),
        default=_env("LAYOUT", "default"),
        help="'seed': the Node service's own tables (default: $EXTENSION_FSM_LAYOUT or default)",
    )


def add_parsers(sub: Any) -> None:
    """Add ``db``, ``status``, ``history``, ``outbox`` and ``worker`` to ``sub``."""
    db = sub.add_parser("db", help="run the packaged schema migrations (Alembic)")
    dbs = db.add_subparsers(dest="db_command", required=True)
    up = dbs.add_parser("upgrade", help="migrate up (default: to the newest revision)")
    up.add_argument("revision", nargs="?", default="head")
    up.add_argument(
        "--extension-timeout-seconds",
        type=float,
        metavar="N",
        help="with --layout seed: the old service's configured timeout; requests pending at "
        "cutover get requested_at + N as their deadline (default 10)",
    )
    down = dbs.add_parser("downgrade", help="migrate down to REV ('base' drops every table)")
    down.add_argument("revision")
    st = dbs.add_parser("stamp", help="record REV as applied without running it")
    st.add_argument("revision")
    dbs.add_parser("current", help="print the revision the database is at")
    for p in (up, down, st, dbs.choices["current"]):
        _common(p)

    status = sub.add_parser("status", help="counts: pending, overdue, outbox backlog")
    _common(status)
    status.add_argument("--json", action="store_true", help="print the counts as JSON")

    history = sub.add_parser(
        "history",
        help="one extension's moves, deliveries and payment events (read only)",
        description=(
            "Print what the tables know about one extension (or every extension of "
            "--session): each move of the extension, its session and its payment with "
            "who or what made it (customer, mitra, system, host), each outbox delivery with "
            "its failed attempts, last error and when it was delivered or given up on, "
            "and the payment events told to the host. Reads only. Formats: 'table' "
            "(plain text, the default), 'json' (one document per extension, in a list), "
            "'sequence' (a Mermaid sequence diagram, like simulate's)."
        ),
    )
    history.add_argument("extension_id", nargs="?", metavar="EXTENSION_ID")
    history.add_argument(
        "--session", metavar="SESSION_ID", help="every extension of this session, oldest first"
    )
    history.add_argument(
        "--format",
        choices=("table", "json", "sequence"),
        default="table",
        help="table: plain text; json: a list of documents; sequence: Mermaid (default table)",
    )
    _common(history)

    outbox = sub.add_parser("outbox", help="outbox maintenance")
    obs = outbox.add_subparsers(dest="outbox_command", required=True)
    retry = obs.add_parser("retry-dead", help="requeue every dead outbox row")
    _common(retry)

    w = sub.add_parser(
        "worker",
        help="run the sweep and the outbox dispatcher until SIGTERM",
        description=(
            "Resolve due extensions and deliver outbox rows until SIGTERM; run as many "
            "replicas as you like. Flags default to EXTENSION_FSM_* environment variables."
        ),
    )
    _common(w)
    w.add_argument(
        "--redis",
        metavar="URL",
        default=_env("REDIS_URL"),
        help="socket bridge, presence, push tokens, session-timer stream",
    )
    w.add_argument("--redis-prefix", default=_env("REDIS_PREFIX", "extension_fsm:"))
    w.add_argument(
        "--fcm-credentials",
        metavar="FILE",
        default=_env("FCM_CREDENTIALS"),
        help="Firebase service-account JSON: enables push (needs --redis)",
    )
    w.add_argument(
        "--fcm-endpoint",
        metavar="URL",
        default=_env("FCM_ENDPOINT"),
        help="replaces https://fcm.googleapis.com (a local fake)",
    )
    w.add_argument(
        "--session-timer",
        choices=("redis", "none"),
        default=_env("SESSION_TIMER"),
        help="where session-timer rows go (default: redis with --redis, else none)",
    )
    w.add_argument("--timeout-action", default=_env("TIMEOUT_ACTION", "auto_approve"))
    w.add_argument("--grace-seconds", type=int, default=_env_int("GRACE_SECONDS", 60))
    w.add_argument("--interval", type=float, default=1.0, help="seconds between idle passes")
    w.add_argument("--batch", type=int, default=100, help="rows per claim")
    w.add_argument(
        "--shutdown-timeout",
        type=float,
        default=10.0,
        help="seconds to finish the current step after SIGTERM",
    )
    w.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        default=_env_int("METRICS_PORT"),
        help="serve :PORT/metrics (Prometheus text), /healthz and /readyz (the prometheus extra)",
    )
    w.add_argument("--log-format", choices=("json", "kv"), default=_env("LOG_FORMAT", "json"))
    w.add_argument(
        "--log-level",
        default=_env("LOG_LEVEL", "INFO"),
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
    )


def run(args: argparse.Namespace) -> int:
    """Run an operator subcommand; the exit status."""
    try:
        url = database_url(args.db)
        match args.command:
            case "db":
                return _db(args, url)
            case "status":
                return _status(args, url)
            case "outbox":
                return _retry_dead(args, url)
            case "history":
                return _history(args, url)
            case _:
                return _worker(args, url)
    except UsageError as err:
        print(f"extension-fsm {args.command}: {err}", file=sys.stderr)
        return 2
    except Failure as err:
        print(f"extension-fsm {args.command}: {err}", file=sys.stderr)
        return 1


def _db(args: argparse.Namespace, url: str) -> int:
    from alembic.util import CommandError

    from . import migrate

    check_sqlite_file(url, creates=args.db_command == "upgrade")
    prefix = args.table_prefix
    options = {"layout": args.layout if args.layout != "default" else ""}
    timeout = getattr(args, "extension_timeout_seconds", None)
    if timeout is not None:
        if args.layout != "seed":
            raise UsageError("--extension-timeout-seconds goes with --layout seed")
        options["extension_timeout_seconds"] = f"{timeout:g}"
    try:
        match args.db_command:
            case "upgrade":
                at = migrate.upgrade(url, args.revision, table_prefix=prefix, options=options)
            case "downgrade":
                at = migrate.downgrade(url, args.revision, table_prefix=prefix, options=options)
            case "stamp":
                at = migrate.stamp(url, args.revision, table_prefix=prefix, options=options)
            case _:
                at = migrate.current(url, table_prefix=prefix)
    except CommandError as err:
        raise UsageError(one_line(err)) from None
    except Exception as err:
        raise failure(err, url) from None
    head = migrate.head()
    print(" ".join(f"{rev} (head)" if rev == head else rev for rev in at) or "base (empty)")
    return 0


async def _with_store(args: argparse.Namespace, url: str, fn: Any) -> Any:
    from .adapters.sqlalchemy import SqlAlchemyStore
    from .operator_status import missing_tables

    check_sqlite_file(url, creates=False)
    try:
        store = await SqlAlchemyStore.open(url, table_prefix=args.table_prefix, layout=args.layout)
    except Exception as err:
        raise failure(err, url) from None
    try:
        try:
            missing = await missing_tables(store)
        except Exception as err:
            raise failure(err, url) from None
        if missing:
            missed = ", ".join(missing)
            raise Failure(f"not migrated (missing {missed}): run extension-fsm db upgrade")
        try:
            return await fn(store)
        except Exception as err:
            raise failure(err, url) from None
    finally:
        await store.aclose()


def _status(args: argparse.Namespace, url: str) -> int:
    from .operator_status import collect_status

    doc = asyncio.run(_with_store(args, url, collect_status))
    if args.json:
        print(json.dumps(doc, indent=2, sort_keys=True))
        return 0
    x, o = doc["extensions"], doc["outbox"]
    by = ", ".join(f"{k} {v}" for k, v in sorted(x["by_status"].items())) or "none"
    print(f"extensions: {by}")
    late = x["oldest_overdue_seconds"]
    oldest = f" (oldest {late:.1f} s past its deadline)" if late else ""
    print(f"overdue: {x['overdue']}{oldest}")
    if x["set_aside"] is not None:
        print(f"set aside: {x['set_aside']}")
    print(f"outbox: waiting {o['waiting']}, retrying {o['retrying']}, dead {o['dead']}")
    return 0


def _history(args: argparse.Namespace, url: str) -> int:
    from .history import load_history, render

    if (args.extension_id is None) == (args.session is None):
        raise UsageError("give an EXTENSION_ID or --session SESSION_ID (one of them)")

    async def read(store: Any) -> Any:
        return await load_history(store, extension_id=args.extension_id, session_id=args.session)

    found = asyncio.run(_with_store(args, url, read))
    if not found:
        what = (
            f"extension {args.extension_id}" if args.session is None else f"session {args.session}"
        )
        raise Failure(f"no extension found for {what}")
    sys.stdout.write(render(found, args.format))
    return 0


def _retry_dead(args: argparse.Namespace, url: str) -> int:
    from .operator_status import retry_dead

    n = asyncio.run(_with_store(args, url, retry_dead))
    print(f"requeued {n} dead outbox row(s)")
    return 0


def _worker(args: argparse.Namespace, url: str) -> int:
    from .worker import ConfigError, WorkerConfig, configure_logging

    for value in (args.grace_seconds, args.metrics_port):
        if isinstance(value, _BadEnv):
            raise UsageError(str(value))
    if args.log_format not in ("json", "kv"):  # an environment default escapes choices
        raise UsageError(f"--log-format {args.log_format!r}: json or kv")
    if str(args.log_level).upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise UsageError(f"--log-level {args.log_level!r}: DEBUG, INFO, WARNING or ERROR")
    if args.fcm_endpoint and not args.fcm_credentials:
        raise UsageError("--fcm-endpoint makes no sense without --fcm-credentials")
    if args.session_timer == "redis" and not args.redis:
        raise UsageError("--session-timer redis needs --redis URL")
    cfg = WorkerConfig(
        db=url,
        table_prefix=args.table_prefix,
        layout=args.layout,
        redis_url=args.redis,
        redis_prefix=args.redis_prefix,
        fcm_credentials=args.fcm_credentials,
        fcm_endpoint=args.fcm_endpoint,
        session_timer=args.session_timer,
        timeout_action=args.timeout_action,
        grace_seconds=args.grace_seconds,
        sweep_interval=args.interval,
        dispatch_interval=args.interval,
        batch=args.batch,
        shutdown_timeout=args.shutdown_timeout,
    )
    try:
        cfg.validate()
    except ConfigError as err:
        raise UsageError(str(err)) from None
    if args.metrics_port is not None and not 0 < args.metrics_port < 65536:
        raise UsageError(f"--metrics-port {args.metrics_port}: not a port")
    check_sqlite_file(url, creates=False)
    server = None if args.metrics_port is None else _serve_metrics(args.metrics_port, args, url)
    configure_logging(args.log_format, str(args.log_level).upper())
    try:
        return asyncio.run(_run_watched(cfg, server))
    finally:
        if server is not None:
            server.close()


async def _run_watched(cfg: Any, server: Any) -> int:
    from .worker import run_worker

    if server is not None:
        server.watch(asyncio.get_running_loop())  # /healthz: this loop answers
    return await run_worker(cfg)


def _serve_metrics(port: int, args: argparse.Namespace, url: str) -> Any:
    """``/metrics`` (Prometheus text from the library's instruments),
    ``/healthz`` and ``/readyz`` on ``:port`` (:mod:`extension_fsm.worker_http`)."""
    if not 0 < port < 65536:
        raise UsageError(f"--metrics-port {port}: not a port")
    try:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from opentelemetry.sdk.metrics import MeterProvider
        from prometheus_client import make_wsgi_app  # noqa: F401 - the extra is there
    except ImportError:
        raise UsageError("--metrics-port needs pip install 'extension-fsm[prometheus]'") from None
    from . import metrics
    from .worker_http import HealthServer, database_ready

    def ready() -> Any:
        return database_ready(url, table_prefix=args.table_prefix, layout=args.layout)

    try:
        server = HealthServer(port, ready)
    except OSError as err:
        raise Failure(f"--metrics-port {port}: {err}") from None
    server.start()
    metrics.use_meter_provider(MeterProvider(metric_readers=[PrometheusMetricReader()]))
    return server
