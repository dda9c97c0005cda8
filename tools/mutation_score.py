"""Per-module mutation score from ``mutmut results --all true``.

``python tools/mutation_score.py DIR...``: the results of the mutmut runs in
each folder, together (``tools/mutation.sh`` runs mutmut and then this).  Score = killed
(timeouts count as killed) / every mutant checked, so mutants no test reaches
count against it.  Prints a markdown table (one row per module as the issue
names them: ``core`` is the package, ``service`` is service.py with the
deadline sweep it owns, deadlines.py; then every file, then all together) and the
survivors, one a line.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter, defaultdict

KILLED = {"killed", "timeout", "caught by type check"}
NOT_RUN = {"not checked", "skipped"}


def _group(module: str) -> str:
    """The module as the issue names it: the core package, the service with its sweep."""
    if module.startswith("extension_fsm.core."):
        return "extension_fsm.core"
    if module == "extension_fsm.deadlines":
        return "extension_fsm.service"
    return module


def _file(module: str) -> str:
    return "extension_fsm.core.__init__" if module == "extension_fsm.core" else module


def main() -> int:
    out = ""
    for folder in sys.argv[1:] or ["."]:
        out += subprocess.run(
            ["mutmut", "results", "--all", "true"],
            capture_output=True,
            text=True,
            check=True,
            cwd=folder,
        ).stdout
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    survivors: dict[str, list[str]] = defaultdict(list)
    for line in out.splitlines():
        name, _, status = line.strip().rpartition(": ")
        if not name or status in NOT_RUN:
            continue
        module = name.split(".x", 1)[0]  # extension_fsm.core.x__timeout__mutmut_3
        counts[module][status] += 1
        if status not in KILLED:
            survivors[module].append(f"{name}: {status}")
    groups: dict[str, Counter[str]] = defaultdict(Counter)
    for module, c in counts.items():
        groups[_group(module)].update(c)
    overall: Counter[str] = Counter()
    for c in counts.values():
        overall.update(c)
    print("| module | mutants | killed | survived | no tests | score |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    rows = [*sorted(groups.items()), ("**all**", overall)]
    if len(counts) > 1:
        rows[-1:-1] = [(f"{_file(m)} (file)", c) for m, c in sorted(counts.items())]
    for module, c in rows:
        total = sum(c.values())
        killed = sum(c[s] for s in KILLED)
        score = 100 * killed / total
        print(
            f"| {module} | {total} | {killed} | {c['survived']} | {c['no tests']} "
            f"| mutation score: {score:.1f}% |"
        )
    for module, names in sorted(survivors.items()):
        print(f"\n{module}: {len(names)} not killed")
        for name in names:
            print(f"  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
