#!/usr/bin/env bash
# Mutation score (not run in CI: it takes tens of minutes on two cores).
#
#   tools/mutation.sh                      # machine and core
#   tools/mutation.sh outbox service       # any of machine, core, outbox, service
#                                          # (service: service.py and deadlines.py)
#
# mutmut copies src/ and tests/ into mutants/, mutates the chosen modules and
# runs for each mutant the fast tests that reach it (tests/unit and the
# in-memory race properties, under the small fixed "mutation" hypothesis
# profile).  Each mutant's worker is forked from a process that has imported
# everything, except for machine.py: its state machines are built at import
# time, so it runs in a scratch copy with a fork server (a fresh import per
# mutant, slower), and what it leaves is rechecked against the whole fast
# selection (tools/mutation_recheck.py; count those lines by hand).  The table
# printed at the end goes in docs/testing.md.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q -e '.[dev,mutation]'
export HYPOTHESIS_PROFILE=mutation
jobs="${MUTATION_JOBS:-2}"
[ "$#" -gt 0 ] || set -- machine core

fork=() scratch=""
for module in "$@"; do
  if [ "$module" = machine ]; then
    scratch="$(mktemp -d)"
  elif [ "$module" = service ]; then
    # the deadline sweep the service owns (every timeout) is its own module
    fork+=("extension_fsm.service*" "extension_fsm.deadlines*")
  else
    fork+=("extension_fsm.$module*")
  fi
done

rm -rf mutants
if [ "${#fork[@]}" -gt 0 ]; then
  mutmut run --max-children "$jobs" "${fork[@]}" || true
fi
if [ -n "$scratch" ]; then
  cp -r src tests tools pyproject.toml "$scratch"
  sed -i 's/^process_isolation = "fork"$/process_isolation = "forkserver"/' "$scratch/pyproject.toml"
  (cd "$scratch" && git init -q && mutmut run --max-children "$jobs" "extension_fsm.machine*") || true
  # mutmut could not link import-time code to its tests: recheck what it left
  (cd "$scratch" && python tools/mutation_recheck.py survived "no tests") || true
fi
python tools/mutation_score.py . ${scratch:+"$scratch"}
