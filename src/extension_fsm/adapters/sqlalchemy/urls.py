"""Database URLs: what a user types, mapped to the driver that runs it."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.engine import URL, make_url

__all__ = [
    "AsyncpgOptions",
    "PgTimeouts",
    "is_memory_sqlite",
    "resolve_url",
    "split_asyncpg_options",
    "split_pg_timeouts",
    "to_async_url",
]


def resolve_url(url: str | URL) -> URL:
    """The URL the store connects with.

    ``sqlite://`` and ``sqlite:///f.db`` run on the standard library's driver
    (``+pysqlite``, also accepted spelled out) on a worker thread of the store;
    ``postgresql://`` (or ``+asyncpg``) on asyncpg through SQLAlchemy's async
    engine.  Anything else is a ``ValueError`` saying what to write instead.
    """
    parsed = make_url(url)
    backend, _, driver = parsed.drivername.partition("+")
    if backend == "sqlite":
        if driver not in ("", "pysqlite"):
            raise ValueError(
                f"unsupported SQLite driver {driver!r}: write sqlite:// (the store runs "
                "SQLite on a thread of its own; +aiosqlite is no longer needed)"
            )
        return parsed.set(drivername="sqlite+pysqlite")
    if backend in ("postgresql", "postgres"):
        if driver not in ("", "asyncpg"):
            raise ValueError(
                f"unsupported PostgreSQL driver {driver!r}: write postgresql:// (asyncpg), "
                "or pass an AsyncEngine of your own to SqlAlchemyStore.open"
            )
        return parsed.set(drivername="postgresql+asyncpg")
    raise ValueError(f"unsupported database {backend!r}: use sqlite:// or postgresql://")


def to_async_url(url: str | URL) -> URL:
    """Like :func:`resolve_url`, but always an asyncio driver (SQLite: aiosqlite),
    for ``create_async_engine`` (the Alembic environment uses it)."""
    resolved = resolve_url(url)
    if resolved.get_backend_name() == "sqlite":
        return resolved.set(drivername="sqlite+aiosqlite")
    return split_pg_timeouts(resolved)[0]


@dataclass(frozen=True, slots=True)
class PgTimeouts:
    """How long PostgreSQL work may take, in seconds (``0``: no limit).

    ``connect``: opening a connection; ``statement``: the server cancels a
    statement running longer (``statement_timeout``); ``command``: the client
    gives up on an answer that does not come (asyncpg only: a frozen server
    or a network that swallows packets); ``pool``: waiting for a free pooled
    connection; ``lock``: a statement waiting for a row another transaction
    holds (``lock_timeout``; a decision's write that waits longer is a lost
    race, decided again).  The client limit is a little longer than the server's, so a
    slow statement is cancelled cleanly by the server first.
    """

    connect: float = 5.0
    statement: float = 10.0
    command: float = 12.0
    pool: float = 10.0
    lock: float = 2.0


_TIMEOUT_PARAMS = {
    "connect_timeout": "connect",
    "statement_timeout": "statement",
    "command_timeout": "command",
    "pool_timeout": "pool",
    "lock_timeout": "lock",
}


def split_pg_timeouts(url: URL) -> tuple[URL, PgTimeouts]:
    """``url`` without its timeout parameters, and the timeouts they set.

    ``postgresql://…?connect_timeout=2&statement_timeout=5&command_timeout=6&pool_timeout=3``
    (seconds; ``0`` turns a limit off); an absent one keeps its default.
    A value that is not a number is a ``ValueError``.
    """
    values: dict[str, float] = {}
    for param, field in _TIMEOUT_PARAMS.items():
        raw = url.query.get(param)
        if raw is None:
            continue
        text = raw[-1] if isinstance(raw, tuple) else raw
        try:
            seconds = float(text)
        except ValueError:
            raise ValueError(f"{param} must be a number of seconds, not {text!r}") from None
        if not seconds >= 0 or seconds == float("inf"):
            raise ValueError(f"{param} must be a finite number of seconds >= 0, not {text!r}")
        values[field] = seconds
    return url.difference_update_query(_TIMEOUT_PARAMS), PgTimeouts(**values)


# libpq connection parameters that asyncpg takes as server settings instead
_SERVER_SETTINGS = ("application_name",)
# asyncpg's own connect() options that take a whole number
_INT_OPTIONS = (
    "statement_cache_size",
    "max_cached_statement_lifetime",
    "max_cacheable_statement_size",
)


@dataclass(frozen=True, slots=True)
class AsyncpgOptions:
    """What an asyncpg URL's query sets beyond what SQLAlchemy passes on:
    ``connect`` (keyword arguments of ``asyncpg.connect``, as numbers) and
    ``server_settings`` (e.g. ``application_name``)."""

    connect: dict[str, int]
    server_settings: dict[str, str]


def split_asyncpg_options(url: URL) -> tuple[URL, AsyncpgOptions]:
    """``url`` without the options SQLAlchemy would hand asyncpg unconverted.

    ``?application_name=`` is a libpq parameter (psycopg takes it as it is):
    asyncpg gets it as a server setting.  ``?statement_cache_size=`` and the
    other statement-cache options are whole numbers (SQLAlchemy passes the
    text).  A value that is not a whole number >= 0 is a ``ValueError``.
    """
    connect: dict[str, int] = {}
    for name in _INT_OPTIONS:
        raw = url.query.get(name)
        if raw is None:
            continue
        text = raw[-1] if isinstance(raw, tuple) else raw
        if not text.isdigit():
            raise ValueError(f"{name} must be a whole number >= 0, not {text!r}")
        connect[name] = int(text)
    settings: dict[str, str] = {}
    for name in _SERVER_SETTINGS:
        raw = url.query.get(name)
        if raw is not None:
            settings[name] = raw[-1] if isinstance(raw, tuple) else raw
    cleaned = url.difference_update_query((*_INT_OPTIONS, *_SERVER_SETTINGS))
    return cleaned, AsyncpgOptions(connect, settings)


def is_memory_sqlite(url: URL) -> bool:
    """Whether ``url`` names a private in-memory SQLite database."""
    return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")
