#!/usr/bin/env bash
# The whole test suite (called by `make test`): lint, unit + conformance tests, notebooks.
# pytest's exit code 5 ("no tests collected") counts as success for a selection that is
# legitimately empty; any other non-zero code fails the run.
set -uo pipefail
BIN=${1:-.venv/bin}
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp}
status=0
step() { echo "== $*"; "$@"; rc=$?; [ $rc -eq 5 ] && rc=0; [ $rc -ne 0 ] && status=$rc; return 0; }

step "$BIN/ruff" check .
step "$BIN/ruff" format --check .
step "$BIN/python" -m pytest -p no:cacheprovider tests
# notebooks run as on a new machine: a fresh cache (no calibration: vg.devices() prints the
# same columns as when the notebooks were executed)
NBCACHE=$(mktemp -d)
VGPU_NB_CACHE_DIR=$NBCACHE step "$BIN/python" -m pytest -p no:cacheprovider --nbval notebooks --nbval-sanitize-with .nbval-sanitize.cfg
rm -rf "$NBCACHE"
echo "== test suite exit code: $status"
exit $status
