"""A throw-away PostgreSQL database per run, so helpers and CI never collide."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import psycopg

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"


def admin_url() -> str:
    """The server to create the database on (the tests' variable, then the default)."""
    return os.environ.get("EXTENSION_FSM_TEST_POSTGRES_URL", DEFAULT_URL)


def _with_db(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def available() -> str | None:
    """``None`` when the server answers, else why not."""
    try:
        with psycopg.connect(admin_url(), connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as err:
        return f"PostgreSQL at {admin_url()} unavailable: {err}"
    return None


@contextmanager
def temporary_database() -> Iterator[str]:
    """Create ``efsm_bench_<random>``, yield its URL, drop it afterwards."""
    name = f"efsm_bench_{secrets.token_hex(4)}"
    with psycopg.connect(admin_url(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _with_db(admin_url(), name)
    finally:
        with psycopg.connect(admin_url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
