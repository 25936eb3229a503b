#!/usr/bin/env bash
# CTNormalize: one script for set-up + the two jobs.
#   ./scripts/run.sh demo [OUTDIR]      set up (or reuse) .venv, then run the demo
#   ./scripts/run.sh test [PYTEST ARGS] set up (or reuse) .venv, then run the test suite
# Set-up installs the CPU torch pin first (an unpinned torch pulls GBs of CUDA packages),
# then this package with its test extras (pyradiomics-bhklab, pydicom, slicerio, slicer-core).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${CTNORMALIZE_VENV:-.venv}"
PYTHON="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
  echo "Creating $VENV ..." >&2
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
STAMP="$VENV/.ctnormalize-setup"
if [ ! -f "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ]; then
  echo "Installing dependencies into $VENV ..." >&2
  "$PY" -m pip install -q --upgrade pip
  "$PY" -m pip install -q "torch==2.13.0"
  "$PY" -m pip install -q -e ".[test,slicer-test]"
  touch "$STAMP"
fi

cmd="${1:-}"
[ $# -gt 0 ] && shift
case "$cmd" in
  demo)
    exec "$VENV/bin/ctnormalize" demo -o "${1:-demo-out}" ;;
  test)
    export MPLBACKEND=Agg
    # the slowest tests listed at the end: the suite must stay under ~15 min on 2 cores
    exec "$PY" -m pytest -q --durations=15 "$@" ;;
  *)
    echo "usage: $0 demo [OUTDIR] | test [pytest args]" >&2
    exit 2 ;;
esac
