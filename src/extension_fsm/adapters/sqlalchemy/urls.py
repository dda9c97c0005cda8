"""Database URLs: what a user types, mapped to the driver that runs it."""

from __future__ import annotations

from sqlalchemy.engine import URL, make_url

__all__ = ["is_inline_sqlite", "is_memory_sqlite", "resolve_url", "to_async_url"]

_SQLITE_DRIVERS = {"": "pysqlite", "pysqlite": "pysqlite", "aiosqlite": "aiosqlite"}
_POSTGRES_DRIVERS = {"": "asyncpg", "asyncpg": "asyncpg", "psycopg": "psycopg"}


def resolve_url(url: str | URL) -> URL:
    """The URL the store connects with.

    ``sqlite://`` and ``sqlite:///f.db`` run on the standard library's
    ``sqlite3`` on the event loop's own thread (``+pysqlite``: each statement
    is microseconds, cheaper than handing it to a thread); ``+aiosqlite``
    keeps every statement off the loop, one thread hand-off per driver call.
    ``postgresql://`` runs on asyncpg; ``+asyncpg`` and ``+psycopg`` are kept.
    Anything else is a ``ValueError``.
    """
    parsed = make_url(url)
    backend, _, driver = parsed.drivername.partition("+")
    if backend == "sqlite":
        if driver not in _SQLITE_DRIVERS:
            raise ValueError(
                f"unsupported SQLite driver {driver!r}: use sqlite://, +pysqlite or +aiosqlite"
            )
        return parsed.set(drivername=f"sqlite+{_SQLITE_DRIVERS[driver]}")
    if backend in ("postgresql", "postgres"):
        if driver not in _POSTGRES_DRIVERS:
            raise ValueError(
                f"unsupported PostgreSQL driver {driver!r}: use postgresql://, +asyncpg or +psycopg"
            )
        return parsed.set(drivername=f"postgresql+{_POSTGRES_DRIVERS[driver]}")
    raise ValueError(f"unsupported database {backend!r}: use sqlite:// or postgresql://")


def to_async_url(url: str | URL) -> URL:
    """Like :func:`resolve_url`, but always an asyncio driver (SQLite: aiosqlite),
    for ``create_async_engine`` (the Alembic environment uses it)."""
    resolved = resolve_url(url)
    if resolved.get_backend_name() == "sqlite":
        return resolved.set(drivername="sqlite+aiosqlite")
    return resolved


def is_inline_sqlite(url: URL) -> bool:
    """Whether a resolved ``url`` runs SQLite on the event loop's thread."""
    return url.drivername == "sqlite+pysqlite"


def is_memory_sqlite(url: URL) -> bool:
    """Whether ``url`` names a private in-memory SQLite database."""
    return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")
