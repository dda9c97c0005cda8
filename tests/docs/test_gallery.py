"""The timeline gallery is what the bundled timelines produce today, and every
diagram in it is a well-formed Mermaid sequence diagram of the run."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path

from extension_fsm.simulator.scenario import load_scenario
from extension_fsm.simulator.sequence import sequence_diagram
from extension_fsm.simulator.timeline import run_scenario

ROOT = Path(__file__).resolve().parents[2]
_STATEMENT = re.compile(
    r"^    (participant [CSPM] as .+"
    r"|Note over [CSPM]: .+"
    r"|[CSPM](->>|-x|--x)[CSPM]: .+)$"
)


def test_the_gallery_is_current() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gallery.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_bundled_timeline_is_in_the_gallery() -> None:
    page = (ROOT / "docs" / "timelines.md").read_text()
    names = sorted(p.name for p in (ROOT / "examples" / "timelines").iterdir() if p.suffix != ".md")
    assert names and all(f"## {name}\n" in page for name in names)


def test_a_diagram_shows_calls_timers_refusals_and_both_channels() -> None:
    path = ROOT / "examples" / "timelines" / "mitra-offline-incident.json"
    result = asyncio.run(run_scenario(load_scenario(path)))
    text = sequence_diagram(result)
    lines = text.splitlines()
    assert lines[0] == "sequenceDiagram"
    assert all(_STATEMENT.match(line) for line in lines[1:]), text
    assert "    C->>S: 0s request +15 min, 15000, payment p1" in lines  # a call
    assert any(line.startswith("    Note over S: 10s timer") for line in lines)  # the deadline
    assert "    S-xM: extension_request (no socket)" in lines  # no socket took it...
    assert "    P->>M: Permintaan Perpanjang" in lines  # ...so a push
    assert "    S--xM: EXTENSION_RESOLVED 409: Extension not found or already resolved" in lines
    # one arrow per delivery the run recorded, in order
    pushed = sum(1 for row in result.rows for d in row.deliveries if d.channel == "push")
    assert sum(1 for line in lines if line.startswith("    S->>P: push ")) == pushed
