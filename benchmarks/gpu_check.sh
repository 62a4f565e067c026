#!/usr/bin/env bash
# The prepared GPU check for a session with the device tool (one run, about 6-8 minutes
# on an H200): the two anchor shapes with every engine (eager, torch.compile, the Triton
# kernel), each scored against the float64 lens; then the MoE and SSM shapes if time is
# left. Results land in $OUT (the device tool brings them back) or benchmarks/results.
#
#   run: bash benchmarks/gpu_check.sh        (timeout_s 540 leaves room for a rerun)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python -c "import torch, triton, transformers; print('torch', torch.__version__, 'triton', triton.__version__, 'transformers', transformers.__version__)"
timeout 360 python -m benchmarks.run --device cuda --cases llama-2-7b-shape llama-3-8b-shape \
  --output "$OUT/gpu-h200.json" 2>&1 | grep -v Warning
timeout 150 python -m benchmarks.run --device cuda --cases qwen3-30b-a3b-shape mamba2-7b-shape \
  --output "$OUT/gpu-h200-moe-ssm.json" 2>&1 | grep -v Warning
ls -la "$OUT"
