"""The worked example of the test kit (examples/host_kit) runs green, as a host
would run it: its own pytest process, on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.contract.kit_runs import ROOT, run_pytest
from tests.integration.sql_support import private_postgres_database

EXAMPLE = ROOT / "examples" / "host_kit" / "test_host_store.py"

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(params=["sqlite", "postgres"])
def database_env(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    if request.param == "sqlite":
        yield {"HOST_KIT_DATABASE_URL": ""}
        return
    with private_postgres_database("hostkit") as url:
        yield {"HOST_KIT_DATABASE_URL": url}


def test_the_example_host_store_passes_the_contract_and_the_races(
    database_env: dict[str, str],
) -> None:
    report = run_pytest(EXAMPLE, env=database_env)
    assert report.startswith("exit 0\n"), report
    # both parts of the kit ran, and nothing was skipped
    for case in (
        "TestHostStore::test_compare_and_set_writes_only_from_the_expected_status",
        "TestHostStore::test_lanes_rows_without_a_lane_are_never_held",
        "TestHostRaces::runTest",
    ):
        assert f"PASSED examples/host_kit/test_host_store.py::{case}" in report, report
    # only the PostgreSQL-only case may skip, and only on SQLite
    skipped = [line for line in report.splitlines() if line.startswith("SKIPPED")]
    on_sqlite = database_env["HOST_KIT_DATABASE_URL"] == ""
    assert all("PostgreSQL only" in line for line in skipped) and (on_sqlite or not skipped), report


def test_the_docs_show_the_example_module_as_it_is() -> None:
    page = (ROOT / "docs" / "testing-kit.md").read_text()
    assert f"```python\n{EXAMPLE.read_text()}```" in page
