#!/usr/bin/env bash
# Every figure of the H200 issue in one table (benchmarks/gpu_e2e.py): evaluation of a
# Ped2-shaped test set end to end, generator and destroyer steps in fp32 / bf16, eager and
# compiled (CUDA graphs, fused AdamW), correlation and warp against their floors and peers,
# the reference algorithm in the same run, each figure as a share of its floor.
#   bash benchmarks/gpu_e2e.sh             # on the GPU machine (builds the extension first; < 8 minutes)
#   bash benchmarks/gpu_e2e.sh --dry-run   # tiny sizes on the CPU, no build: checks the script
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [[ "${1:-}" != "--dry-run" ]]; then
  $PY -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, 'cuda', torch.cuda.is_available())"
  # Build against whatever torch is installed there: no build isolation, no index, no network.
  # Editable install, so kernels/ is importable as mama.kernels: the Triton kernels serve the ops.
  MAX_JOBS=${MAX_JOBS:-16} $PY -m pip install -q --no-build-isolation --no-deps --no-index -e . 2>&1 | tail -3
  $PY -c "import mama.kernels.warp" || { echo "mama.kernels not importable: the Triton kernels would not be used"; exit 1; }
fi
export PYTHONUNBUFFERED=1
timeout "${E2E_TIMEOUT:-450}" $PY -m benchmarks.gpu_e2e "$@"
