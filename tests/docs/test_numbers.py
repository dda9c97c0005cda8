"""Numbers the docs state about the project itself are the project's, or
are not stated: the head migration the operator sees, and no test count
that the next test would make wrong.  (The metrics' scope version is the
package's: ``tests/ops/test_worker.py`` reads it from a running worker.)"""

from __future__ import annotations

import re
from pathlib import Path

from extension_fsm.migrate import head

ROOT = Path(__file__).resolve().parents[2]


def test_operations_shows_the_head_revision_db_current_prints() -> None:
    page = (ROOT / "docs" / "operations.md").read_text()
    shown = re.findall(r'db current\s+# e\.g\. "(\w+) \(head\)"', page)
    assert shown == [head()]


def test_testing_states_no_count_of_tests() -> None:
    page = (ROOT / "docs" / "testing.md").read_text()
    counts = re.findall(r"\b\d[\d,]* (?:tests|passed|files passed)\b", page)
    assert counts == []
