#!/usr/bin/env bash
# mama's CPU ops against peer libraries (benchmarks/peers_bench.py): installs the peers pinned
# in benchmarks/requirements-peers.txt into the CURRENT python's environment, then runs the
# benchmark, JSON to benchmarks/results/cpu_peers.json. The peers are not dependencies of mama.
#   bash benchmarks/peers.sh                       # from the repository root; PYTHON=... to pick the env
#   bash benchmarks/peers.sh -k correlation        # extra arguments go to pytest
# Needs: torch and mama (built) importable by $PYTHON, a C++20 compiler, network to PyPI
# (first run only). spatial-correlation-sampler ships only an sdist whose setup.py builds a
# CUDA extension and compiles as C++17; it is built here for CPU against the installed torch
# (--no-build-isolation) after the patch below (CPU_ONLY, C++20 as torch 2.14 requires, the CUDA
# header include guarded). The build takes ~1.5 min and is skipped when the pinned version is
# already installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
REQ=benchmarks/requirements-peers.txt
JSON=${PEERS_JSON:-benchmarks/results/cpu_peers.json}
THREADS=${MAMA_PEERS_THREADS:-2}
pin() { sed -n "s/^$1==//p" "$REQ"; }
SCS=$(pin spatial-correlation-sampler) MSSSIM=$(pin pytorch-msssim) KORNIA=$(pin kornia)
installed() { $PY -c "import importlib.metadata as m, sys; sys.exit(m.version('$1') != '$2')" 2>/dev/null; }

$PY -c "import torch, mama.ops as o; assert o.HAS_EXTENSION, 'mama._C not built: make install'; print('torch', torch.__version__)"

if installed pytorch-msssim "$MSSSIM" && installed kornia "$KORNIA"; then
    echo "pytorch-msssim $MSSSIM, kornia $KORNIA already installed"
else
    $PY -m pip install -q --disable-pip-version-check "pytorch-msssim==$MSSSIM" "kornia==$KORNIA"
fi

if installed spatial-correlation-sampler "$SCS" && $PY -c "import torch, spatial_correlation_sampler_backend" 2>/dev/null; then
    echo "spatial-correlation-sampler $SCS already installed"
else
    WORK=$(mktemp -d)
    trap 'rm -rf "$WORK"' EXIT
    # The sdist's metadata step imports torch, hence --no-build-isolation here too.
    $PY -m pip download -q --disable-pip-version-check --no-binary :all: --no-deps \
        --no-build-isolation "spatial-correlation-sampler==$SCS" -d "$WORK"
    tar xzf "$WORK/spatial_correlation_sampler-$SCS.tar.gz" -C "$WORK"
    SRC="$WORK/spatial_correlation_sampler-$SCS"
    patch -d "$SRC" -p1 <<'PATCH'
--- a/Correlation_Module/correlation_sampler.cpp
+++ b/Correlation_Module/correlation_sampler.cpp
@@ -1,5 +1,7 @@
 #include <torch/extension.h>
+#ifdef USE_CUDA
 #include <c10/cuda/CUDAGuard.h>
+#endif
 #include <vector>
 #include <iostream>
 
--- a/setup.py
+++ b/setup.py
@@ -3,12 +3,12 @@
 from torch.utils.cpp_extension import BuildExtension, CUDAExtension, CppExtension
 from os.path import join
 
-CPU_ONLY = False
+CPU_ONLY = True
 project_root = 'Correlation_Module'
 
 source_files = ['correlation.cpp', 'correlation_sampler.cpp']
 
-cxx_args = ['-std=c++17', '-fopenmp']
+cxx_args = ['-std=c++20', '-fopenmp']
 
 def generate_nvcc_args(gpu_archs):
     nvcc_args = []
PATCH
    $PY -m pip install -q --disable-pip-version-check --no-build-isolation --no-deps "$SRC"
fi

mkdir -p "$(dirname "$JSON")"
# OMP_NUM_THREADS as well as torch.set_num_threads (in the bench): the peer's OpenMP loops run on
# torch's libgomp, whose default team size this sets before anything starts.
OMP_NUM_THREADS=$THREADS MAMA_PEERS_THREADS=$THREADS $PY -m pytest benchmarks/peers_bench.py \
    --benchmark-only -q --benchmark-json "$JSON" "$@"

# The ratios, peer/mama of the medians, per group.
$PY - "$JSON" <<'EOF_PY'
import json, sys
data = json.load(open(sys.argv[1]))
groups = {}
for b in data["benchmarks"]:
    groups.setdefault(b["group"], {})[b["extra_info"]["provider"]] = b["stats"]["median"]
print("\n| case | provider | median (s) | peer/mama |\n|---|---|---|---|")
for group, medians in groups.items():
    ours = medians.get("mama")
    for provider, median in medians.items():
        ratio = f"{median / ours:.2f}" if ours and provider != "mama" else ""
        print(f"| {group} | {provider} | {median:.5f} | {ratio} |")
EOF_PY
