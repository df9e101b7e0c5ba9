#!/usr/bin/env bash
# End-to-end speed on a CUDA machine without network (its own, possibly older, torch/triton):
# builds the extension against the installed torch, then times ours vs the reference
# algorithm (benchmarks/reference_pipeline.py) at 256x256, base 64, batch 4, FlowNet2-SD +
# DeepLabv3-R101 with random weights: generator step, destroyer step, evaluation fps over a
# 40-frame video; ours in float32 and bf16 autocast, the baseline in float32 (as the paper
# code runs). CUDA events around each call, median of REPS after one warm-up. One table.
#   bash benchmarks/gpu_e2e.sh             # on the GPU machine, from anywhere (< 8 minutes)
#   bash benchmarks/gpu_e2e.sh --dry-run   # tiny sizes on the CPU, no build: checks the script
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DRY=0
[[ "${1:-}" == "--dry-run" ]] && DRY=1
if [[ $DRY == 0 ]]; then
  $PY -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, 'cuda', torch.cuda.is_available())"
  # Build against whatever torch is installed there: no build isolation, no index, no network.
  # Editable install (as gpu_check.sh), so kernels/ is importable as mama.kernels: the
  # Triton kernels, not the references, serve the custom ops on CUDA.
  MAX_JOBS=${MAX_JOBS:-16} $PY -m pip install -q --no-build-isolation --no-deps --no-index -e . 2>&1 | tail -3
  $PY -c "import mama.kernels.warp" || { echo "mama.kernels not importable: the Triton kernels would not be used"; exit 1; }
fi
export PYTHONUNBUFFERED=1
DRY=$DRY timeout ${E2E_TIMEOUT:-420} $PY - <<'EOF'
import os, statistics, sys, time
sys.path.insert(0, os.getcwd())
import torch
from benchmarks.workload import make_workload

dry = os.environ["DRY"] == "1"
if dry:
    device, size, base, batch, frames, reps = "cpu", 64, 8, 1, 5, 1
    torch.set_num_threads(1)
else:
    device, size, base, batch, frames, reps = "cuda", 256, 64, 4, 40, 3
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = False  # float32 means float32 for both sides
    torch.backends.cudnn.allow_tf32 = False


def timed(fn) -> float:
    """Median seconds of `reps` calls after one warm-up (CUDA events on the GPU)."""
    fn()
    out = []
    for _ in range(reps):
        if device == "cuda":
            torch.cuda.synchronize()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            out.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    return statistics.median(out)


t_start = time.time()
w = make_workload("paper", size=size, batch=batch, base=base, frames=frames, device=device)
ref = w.reference()
rows = []  # (figure, impl, seconds)

for amp in (False, True):
    t = w.generator_trainer(cache=True)
    t.cfg.amp = amp
    rows.append(("generator step", "ours bf16" if amp else "ours fp32", timed(lambda: t.train_step(w.batch_items))))
net_g, net_d = w.generator(), w.discriminator()
opt_g, opt_d = torch.optim.AdamW(net_g.parameters()), torch.optim.AdamW(net_d.parameters())
rows.append(("generator step", "baseline fp32", timed(lambda: ref.generator_step(net_g, net_d, opt_g, opt_d, w.batch_items))))

frozen = w.generator().eval().requires_grad_(False)
for amp in (False, True):
    d = w.destroyer_trainer(frozen, cache=True)
    d.cfg.amp = amp
    rows.append(("destroyer step", "ours bf16" if amp else "ours fp32", timed(lambda: d.train_step(w.batch_items))))
rows.append(("destroyer step", "baseline fp32",
             timed(lambda: ref.destroyer_step(frozen, d.net_a, d.opt_a, w.batch_items, d.damage))))

net_a = w.destroyer().eval()
# The Scorer's default (on CUDA: the models as trained), then with the inference copies
# (BN folded, channels_last) that the Scorer uses on CPU: does the rewrite pay on CUDA too?
for copies in (False, True):
    for amp in (False, True):
        s = w.scorer(frozen, net_a, optimize=copies)
        s.amp = amp
        impl = ("ours bf16" if amp else "ours fp32") + (", inference copies" if copies else "")
        rows.append(("eval video", impl, timed(lambda: s.video_streams(w.video, w.background))))
fast = w.scorer(frozen, net_a, optimize=True).video_streams(w.video, w.background)
slow = w.scorer(frozen, net_a, optimize=False).video_streams(w.video, w.background)
copy_err = max(float(abs(fast[k] - slow[k]).max() / (abs(slow[k]).max() + 1e-12)) for k in slow)
rows.append(("eval video", "baseline fp32", timed(lambda: ref.video_streams(frozen, w.video, w.background, net_a))))

name = torch.cuda.get_device_name() if device == "cuda" else "cpu (dry run)"
print(f"\n{name}, torch {torch.__version__}: {size}x{size}, base {base}, batch {batch}, "
      f"eval video {frames} frames, FlowNet2-SD + DeepLabv3-R101 (random weights)")
print(f"| figure | impl | time (s) | frames/s | x baseline |")
print("|---|---|---|---|---|")
base_time = {fig: sec for fig, impl, sec in rows if impl.startswith("baseline")}
for fig, impl, sec in rows:
    fps = f"{(frames - 4) / sec:.1f}" if fig == "eval video" else ""
    print(f"| {fig} | {impl} | {sec:.4f} | {fps} | {base_time[fig] / sec:.1f} |")
print(f"inference copies vs the models as trained, fp32 streams: max relative difference {copy_err:.1e}")
print(f"total {time.time() - t_start:.0f} s")
EOF
