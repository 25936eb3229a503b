#!/usr/bin/env bash
# Mutation testing of the engine's core modules with mutmut (not in CI: ~30 min on 2 cores).
#
#   scripts/mutation.sh [MODULE ...]    MODULE: quantify classical evaluate io protocols readerstudy
#                                        (default: all six)
#   JOBS=2 scripts/mutation.sh io        parallel mutants (default 2)
#
# Run it before resolving an issue that touches these modules, and update the scores in
# docs/DEVELOPING.md. The files mutated and the test files that may kill them are [tool.mutmut]
# in pyproject.toml; mutmut runs, for each mutant, only the tests that reach the mutated function.
# Results stay in mutants/ (git-ignored): `mutmut show NAME` shows a survivor's diff. Ctrl-C stops
# mutmut and keeps what it checked; the table then scores the checked mutants and counts the rest.
# mutmut is installed into the venv when missing; it is not a dependency of the package.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${CTNORMALIZE_VENV:-.venv}"
PY="$VENV/bin/python"
[ -x "$PY" ] || { echo "no $PY: run ./scripts/run.sh test once (it sets up the venv)" >&2; exit 2; }
"$PY" -c "import mutmut, hypothesis" 2>/dev/null || "$PY" -m pip install -q "mutmut>=3.3,<4" "hypothesis>=6.100"

ALL=(quantify classical evaluate io protocols readerstudy)
MODULES=("$@")
[ ${#MODULES[@]} -gt 0 ] || MODULES=("${ALL[@]}")
# The functions mutated per module (mutmut names: <module path>.x_<function>__mutmut_<n>). The
# reader-study analysis is its statistics; the per-design table building is left out for time.
declare -A SELECT=(
  [quantify]="CTNormalizeLib.quantify.emphysema.*"
  [classical]="CTNormalizeLib.classical.mtf_ratio.* CTNormalizeLib.classical.histogram.*"
  [evaluate]="CTNormalizeLib.evaluate.metrics.* CTNormalizeLib.evaluate.agreement.*"
  [io]="CTNormalizeLib.io.atomic.* CTNormalizeLib.io.validate.*"
  [protocols]="CTNormalizeLib.protocols.protocol.* CTNormalizeLib.protocols.kernels.*"
  [readerstudy]="$(printf 'CTNormalizeLib.readerstudy.analysis.x_%s* ' cohen_kappa fleiss_kappa agreement \
                  _auc_stat roc_curve score_detection _summary _confusion)"
)
GLOBS=()
for m in "${MODULES[@]}"; do
  [ -n "${SELECT[$m]:-}" ] || { echo "unknown module '$m' (one of: ${ALL[*]})" >&2; exit 2; }
  read -r -a g <<< "${SELECT[$m]}"
  GLOBS+=("${g[@]}")
done

# The tests must import mutants/CTNormalizeLib, not a checkout on PYTHONPATH.
unset PYTHONPATH
export MPLBACKEND=Agg CTNORMALIZE_HYPOTHESIS=mutation
rm -rf mutants  # a fresh run: results are for this commit's code and tests
commit="$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- CTNormalizeLib Testing pyproject.toml || echo ' + local changes')"
start=$(date +%s)
"$VENV/bin/mutmut" run --max-children "${JOBS:-2}" "${GLOBS[@]}" > mutants.log 2>&1 || {
  tail -30 mutants.log >&2; echo "mutmut failed; full log in mutants.log" >&2; exit 1; }
mv mutants.log mutants/run.log
times > mutants/cpu.txt  # user/sys CPU of this shell and of mutmut with its children
echo "commit $commit, $(( ($(date +%s) - start) / 60 )) min wall, JOBS=${JOBS:-2}, CPU: $(tail -1 mutants/cpu.txt)"

GLOBS="${GLOBS[*]}" "$PY" - "${MODULES[@]}" <<'EOF'
"""Per-module score from mutmut's result files (mutants/**/*.py.meta), selected mutants only."""
import fnmatch
import json
import os
import sys
from collections import Counter, defaultdict
from pathlib import Path

from mutmut.stats import status_by_exit_code

globs = os.environ["GLOBS"].split()
counts, survivors = defaultdict(Counter), defaultdict(list)
for meta in sorted(Path("mutants/CTNormalizeLib").rglob("*.py.meta")):
    module = meta.relative_to("mutants/CTNormalizeLib").parts[0]
    for name, code in json.loads(meta.read_text())["exit_code_by_key"].items():
        if not any(fnmatch.fnmatch(name, g) for g in globs):
            continue
        status = status_by_exit_code[code]
        counts[module][status] += 1
        if status not in ("killed", "timeout", "caught by type check", "not checked"):
            survivors[module].append(f"{name} ({status})")

# score = killed / checked; "not checked" are mutants a stopped (Ctrl-C) run did not reach
print(f"{'module':<12} {'mutants':>7} {'checked':>7} {'killed':>7} {'survived':>8} {'no tests':>8} {'score':>6}")
for module in sys.argv[1:]:
    c = counts[module]
    n = sum(c.values())
    checked = n - c["not checked"]
    killed = c["killed"] + c["timeout"] + c["caught by type check"]
    score = f"{100 * killed / checked:.1f}%" if checked else "-"
    print(f"{module:<12} {n:>7} {checked:>7} {killed:>7} {c['survived']:>8} {c['no tests']:>8} {score:>6}")
for module in sys.argv[1:]:
    if survivors[module]:
        print(f"\nsurvivors in {module} (see them with: mutmut show NAME):")
        print("\n".join("  " + s for s in survivors[module]))
EOF
