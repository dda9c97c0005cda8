"""The kit catches a broken host store: run on each store of broken_hosts.py (in
a pytest process of its own, as a host runs it), the store contract fails, and
only at the case that names what is broken."""

from __future__ import annotations

import pytest

from tests.contract.kit_runs import ROOT, failed, run_pytest

BROKEN = ROOT / "tests" / "contract" / "broken_hosts.py"

pytestmark = pytest.mark.timeout(600)


@pytest.mark.parametrize(
    ("host", "broken_property"),
    [
        ("TestCompareAndSetIgnored", "test_compare_and_set_writes_only_from_the_expected_status"),
        (
            "TestPendingIndexMissing",
            "test_uniqueness_is_409_and_writes_nothing[second0-EXTENSION_PENDING]",
        ),
        ("TestSessionStatusOnly", "test_write_batch_writes_every_column_a_decision_changed"),
        ("TestSetAsideCountedOnce", "test_set_aside_counts_each_time_and_backs_off_longer"),
        ("TestPendingWithoutStatus", "test_a_resolved_extension_is_read_as_pending_nowhere"),
        ("TestClaimsUnaskedMitras", "test_for_due_claims_no_row_of_a_mitra_not_asked"),
    ],
)
def test_the_contract_fails_at_the_broken_property(host: str, broken_property: str) -> None:
    report = run_pytest(BROKEN, "-k", host)
    assert report.startswith("exit 1\n"), report
    assert failed(report) == {f"{host}::{broken_property}"}, report
    assert (
        f"PASSED tests/contract/broken_hosts.py::{host}::test_exception_rolls_back_every_write"
        in report
    )
