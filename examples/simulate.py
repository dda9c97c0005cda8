"""Play a timeline scenario on a virtual clock: ``python examples/simulate.py simulate FILE``.

The same entry point as the ``extension-fsm`` console script (``pip install -e
'.[cli]'``); see ``examples/timelines/`` for scenarios and ``--help`` for options.
Without arguments it plays the showcase, ``examples/timelines/mitra-offline-incident.json``.
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    from extension_fsm.cli import main
except ImportError:  # run from a checkout without installing the package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from extension_fsm.cli import main

SHOWCASE = Path(__file__).resolve().parent / "timelines" / "mitra-offline-incident.json"

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["simulate", str(SHOWCASE)]))
