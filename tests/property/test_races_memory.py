"""The invariants of ``docs/design.md`` under interleaved races, over the in-memory store.

Examples come from the loaded hypothesis profile (``ci``: 500); each runs up
to ``STEPS`` steps, enough for a request, its races, a timeout, a restart and
a second extension on the same session to meet in one run.
"""

from __future__ import annotations

import pytest
from hypothesis import settings

from extension_fsm.testing import ExtensionRaces

STEPS = 100

# A passing ci run takes ~25 s here; finding and shrinking a failure can take
# minutes, and a clear falsifying example beats a pytest-timeout traceback.
pytestmark = pytest.mark.timeout(900)

TestExtensionRacesInMemory = ExtensionRaces.TestCase
TestExtensionRacesInMemory.settings = settings(
    TestExtensionRacesInMemory.settings, stateful_step_count=STEPS
)
