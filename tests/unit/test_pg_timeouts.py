"""PostgreSQL timeouts come from the URL, are taken out of it before the
driver sees it, and a value that is not a number of seconds is refused."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import make_url

from extension_fsm.adapters.sqlalchemy.dialects import postgres_engine
from extension_fsm.adapters.sqlalchemy.urls import (
    PgTimeouts,
    split_asyncpg_options,
    split_pg_timeouts,
    to_async_url,
)


def test_defaults_bound_every_wait() -> None:
    url, limits = split_pg_timeouts(make_url("postgresql+asyncpg://u@h/db"))
    assert limits == PgTimeouts()
    assert all(v > 0 for v in (limits.connect, limits.statement, limits.command, limits.pool))
    assert limits.command > limits.statement  # the server cancels a slow statement first
    assert str(url) == "postgresql+asyncpg://u@h/db"


def test_the_url_sets_them_and_loses_them() -> None:
    raw = "postgresql://u@h/db?connect_timeout=2&statement_timeout=0&command_timeout=1.5&x=y"
    url, limits = split_pg_timeouts(make_url(raw))
    assert limits == PgTimeouts(connect=2, statement=0, command=1.5, pool=PgTimeouts().pool)
    assert dict(url.query) == {"x": "y"}
    assert "timeout" not in str(to_async_url(raw))


@pytest.mark.parametrize("value", ["soon", "-1", "nan", "inf", "1s"])
def test_a_bad_value_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="statement_timeout"):
        split_pg_timeouts(make_url(f"postgresql://u@h/db?statement_timeout={value}"))


def test_the_engine_bounds_its_pool_and_its_waits() -> None:
    engine = postgres_engine("postgresql://u@h/db?pool_timeout=3&connect_timeout=2&pool_size=4")
    pool = engine.sync_engine.pool
    assert pool._timeout == 3  # type: ignore[attr-defined]
    assert (pool.size(), pool._max_overflow) == (4, 0)  # type: ignore[attr-defined]
    assert "timeout" not in str(engine.url) and "pool_size" not in str(engine.url)


def test_asyncpg_options_are_converted_and_leave_the_url() -> None:
    raw = "postgresql+asyncpg://u@h/db?application_name=svc&statement_cache_size=0&x=1"
    url, options = split_asyncpg_options(make_url(raw))
    assert options.connect == {"statement_cache_size": 0}
    assert options.server_settings == {"application_name": "svc"}
    assert dict(url.query) == {"x": "1"}
    url, options = split_asyncpg_options(make_url("postgresql+asyncpg://u@h/db"))
    assert (options.connect, options.server_settings, dict(url.query)) == ({}, {}, {})


@pytest.mark.parametrize("value", ["-1", "ten", "1.5"])
def test_a_statement_cache_size_that_is_not_a_whole_number_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="statement_cache_size"):
        split_asyncpg_options(make_url(f"postgresql://u@h/db?statement_cache_size={value}"))
