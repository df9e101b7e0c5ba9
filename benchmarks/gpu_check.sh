#!/usr/bin/env bash
# GPU check of the custom ops, for a CUDA machine with no network (its own, possibly older,
# torch and triton). Builds the extension against the installed torch, checks every op's Triton
# kernel against the reference on CUDA (outputs and gradients), then prints the timing table. Under 8 minutes on one GPU.
#   bash benchmarks/gpu_check.sh            # from the repository root
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
$PY -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, 'cuda', torch.cuda.is_available())"
# Build against whatever torch is installed there: no build isolation, no index, no network.
MAX_JOBS=${MAX_JOBS:-8} $PY -m pip install -q --no-build-isolation --no-deps --no-index -e .
# Each op on CUDA tensors (so its Triton kernel) against the reference: forward, every input
# gradient, then the timings.
timeout 180 $PY -m benchmarks.gpu_check --device cuda
