"""``IN_CI``: true under ``CI=true`` (bigger trial counts, services required).

A regular module so that every test file imports one copy of it; pytest
imports ``conftest.py`` files under its own module names.
"""

from __future__ import annotations

import os

IN_CI = os.environ.get("CI") == "true"
