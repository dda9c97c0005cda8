"""``--db URL`` for the operator's commands: what it needs installed, whether
its SQLite file may be created, and its failures said in one line that tells
what to do (a missing directory or database, a server out of reach) rather
than the driver's words.  Used by :mod:`extension_fsm.ops_cli`.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "Failure",
    "UsageError",
    "check_sqlite_file",
    "database_url",
    "failure",
    "one_line",
]


class UsageError(Exception):
    """A bad command line or a missing extra: exit 2."""


class Failure(Exception):
    """The database or a service failed: exit 1."""


def database_url(url: str | None) -> str:
    """``url`` checked: given, a scheme the operator commands take, its extras installed."""
    if not url:
        raise UsageError("--db URL is required (or set EXTENSION_FSM_DATABASE_URL)")
    if url.split(":", 1)[0].split("+", 1)[0] not in ("sqlite", "postgresql", "postgres"):
        raise UsageError(f"--db {url!r}: use sqlite:///file.db or postgresql://…")
    _need("sqlalchemy", "sql")
    _need("alembic", "sql")
    if not url.startswith("sqlite"):
        _need("asyncpg", "postgres")
    return str(url)


def _sqlite_file(url: str) -> Path | None:
    """The file a ``sqlite:///…`` URL names (``None``: in memory, or not SQLite)."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    name = parsed.database
    if parsed.get_backend_name() != "sqlite" or not name or name == ":memory:":
        return None
    if name.startswith("file:") or parsed.query.get("mode") == "memory":
        return None
    return Path(name)


def check_sqlite_file(url: str, *, creates: bool) -> None:
    """Refuse, in one line, a SQLite file that cannot be there; only ``db
    upgrade`` creates a missing one (a typo must not become an empty database)."""
    path = _sqlite_file(url)
    if path is None or path.exists():
        return
    if not path.parent.is_dir():
        raise Failure(f"--db {url}: the directory {path.parent} does not exist")
    if not creates:
        raise Failure(
            f"--db {url}: no such SQLite file {path} (extension-fsm db upgrade creates it)"
        )


def failure(err: BaseException, url: str) -> Failure:
    """``err`` (a driver's or the library's) as one line that says what to do."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    shown = parsed.render_as_string(hide_password=True)
    chain: list[BaseException] = []  # the error, its driver error and their causes
    seen: BaseException | None = err
    while seen is not None and len(chain) < 6:
        chain.append(seen)
        seen = getattr(seen, "orig", None) or seen.__cause__
    text = " ".join(" ".join(str(e).split()) for e in chain)
    if parsed.get_backend_name() == "postgresql":
        name = parsed.database or ""
        if f'database "{name}" does not exist' in text:
            return Failure(
                f"--db {shown}: PostgreSQL has no database {name!r} (create it: createdb {name})"
            )
        where = f"{parsed.host or 'localhost'}:{parsed.port or 5432}"
        if any(isinstance(e, (ConnectionError, TimeoutError)) for e in chain) or (
            "Connection refused" in text or "could not connect" in text
        ):
            return Failure(f"--db {shown}: cannot reach PostgreSQL at {where}")
        if "password authentication failed" in text:
            return Failure(f"--db {shown}: PostgreSQL refused the login (password or user)")
    elif "unable to open database file" in text:
        return Failure(f"--db {shown}: SQLite cannot open the file (check its path and rights)")
    return Failure(one_line(err))


def _need(module: str, extra: str) -> None:
    try:
        __import__(module)
    except ImportError:
        raise UsageError(f"needs pip install 'extension-fsm[{extra}]' ({module})") from None


def one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text[:300]}"
