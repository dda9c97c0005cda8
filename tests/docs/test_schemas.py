"""The JSON Schemas the docs publish are what the models say today."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_published_schemas_are_current() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "schemas.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_published_schemas_are_json_schema_documents() -> None:
    for name in ("messages.json", "scenario.json"):
        schema = json.loads((ROOT / "docs" / "schemas" / name).read_text())
        assert schema["$defs"] and ("properties" in schema)
