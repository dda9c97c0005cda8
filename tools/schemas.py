"""Write the JSON Schemas the docs publish: ``docs/schemas/messages.json``
(every socket frame, push payload and ``pending_extension``) and
``docs/schemas/scenario.json`` (timeline scenario files).

``python tools/schemas.py`` rewrites them; ``--check`` exits 1 when either is
not what the models say today (a test runs it).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from extension_fsm.payloads import messages_schema
from extension_fsm.simulator.scenario import ScenarioFile

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "schemas"


def documents() -> dict[Path, str]:
    return {
        OUT / "messages.json": json.dumps(messages_schema(), indent=2, ensure_ascii=False) + "\n",
        OUT / "scenario.json": json.dumps(
            ScenarioFile.model_json_schema(), indent=2, ensure_ascii=False
        )
        + "\n",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a schema file is stale")
    args = parser.parse_args(argv)
    stale = []
    for path, text in documents().items():
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(path.relative_to(ROOT))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    for path in stale:
        print(f"{path} is stale: run python tools/schemas.py")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
