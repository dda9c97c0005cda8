"""Database URLs: what a user types, mapped to the async driver that runs it."""

from __future__ import annotations

from sqlalchemy.engine import URL, make_url

__all__ = ["is_memory_sqlite", "to_async_url"]

_SQLITE_DRIVERS = {"", "aiosqlite"}
_POSTGRES_DRIVERS = {"": "asyncpg", "asyncpg": "asyncpg", "psycopg": "psycopg"}


def to_async_url(url: str | URL) -> URL:
    """``sqlite:///f.db`` → aiosqlite, ``postgresql://`` → asyncpg; explicit
    ``+aiosqlite``, ``+asyncpg`` and ``+psycopg`` are kept.  Anything else is a
    ``ValueError`` (a sync driver would block the event loop)."""
    parsed = make_url(url)
    backend, _, driver = parsed.drivername.partition("+")
    if backend == "sqlite":
        if driver not in _SQLITE_DRIVERS:
            raise ValueError(f"unsupported SQLite driver {driver!r}: use sqlite:// or +aiosqlite")
        return parsed.set(drivername="sqlite+aiosqlite")
    if backend in ("postgresql", "postgres"):
        if driver not in _POSTGRES_DRIVERS:
            raise ValueError(
                f"unsupported PostgreSQL driver {driver!r}: use postgresql://, +asyncpg or +psycopg"
            )
        return parsed.set(drivername=f"postgresql+{_POSTGRES_DRIVERS[driver]}")
    raise ValueError(f"unsupported database {backend!r}: use sqlite:// or postgresql://")


def is_memory_sqlite(url: URL) -> bool:
    """Whether ``url`` names a private in-memory SQLite database."""
    return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")
