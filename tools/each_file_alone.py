"""Run every test file alone, each in its own pytest process, and report failures.

A test that passes only because another file ran first (shared counters,
module state, a fixture seeded elsewhere) fails here.  Usage::

    python tools/each_file_alone.py                 # every tests/**/test_*.py
    python tools/each_file_alone.py tests/e2e       # only under these paths
    python tools/each_file_alone.py -- -m "not slow"  # extra pytest arguments

Exit status 0 when every file passes alone, 1 otherwise.  Each file runs with
``-p no:randomly`` (its own order) and ``-p no:cacheprovider`` (no state left
behind for the next file).  While the file named by ``PAUSE_FILE`` exists, no
new file starts (to lend the machine to a benchmark without failing a test).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_files(paths: list[str]) -> list[Path]:
    roots = [ROOT / p for p in paths] or [ROOT / "tests"]
    found: set[Path] = set()
    for root in roots:
        if root.is_file():
            found.add(root)
        else:
            found.update(root.rglob("test_*.py"))
    return sorted(found)


def wait_while_paused() -> None:
    pause = os.environ.get("PAUSE_FILE")
    while pause and os.path.exists(pause):
        time.sleep(5)


def run_alone(path: Path, extra: list[str]) -> tuple[int, str]:
    wait_while_paused()
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:randomly",
        "-p",
        "no:cacheprovider",
        str(path.relative_to(ROOT)),
        *extra,
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    return done.returncode, done.stdout + done.stderr


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", help="files or folders (default: tests)")
    argv, extra = sys.argv[1:], []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    args = parser.parse_args(argv)
    failed: list[str] = []
    for path in test_files(args.paths):
        code, output = run_alone(path, extra)
        name = str(path.relative_to(ROOT))
        # 5: no test collected (every test deselected by -m): not a failure
        ok = code in (0, 5)
        tail = output.strip().splitlines()[-1] if output.strip() else ""
        print(f"{'ok  ' if ok else 'FAIL'} {name}: {tail}", flush=True)
        if not ok:
            failed.append(name)
            print(output, flush=True)
    if failed:
        print(f"\n{len(failed)} file(s) fail when run alone:", *failed, sep="\n  ")
        return 1
    print("\nevery test file passes alone")
    return 0


if __name__ == "__main__":
    sys.exit(main())
