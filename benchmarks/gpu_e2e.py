"""Every figure of the H200 issue in one table: evaluation of a Ped2-shaped test set end to end,
the generator and destroyer training steps, the correlation and warp ops, each against the
reference algorithm (benchmarks/reference_pipeline.py) or its peers measured in the same run,
and each as a share of its floor.

Floors: the FLOPs each call does (counted here with torch.utils.flop_counter on the eager
call) over the matrix rate measured here (an 8192^3 product in bf16, and in fp32 without
TF32), or, for the ops, the bytes they must move over the measured copy bandwidth,
whichever is larger. Paper providers (FlowNet2-SD + DeepLabv3-R101), random weights (timing
does not depend on them), 256x256, base 64, batch 4.

    python -m benchmarks.gpu_e2e            # on a CUDA machine (benchmarks/gpu_e2e.sh builds first)
    python -m benchmarks.gpu_e2e --dry-run  # tiny sizes on the CPU: checks the script (in the tests)
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks import sizes
from benchmarks.workload import make_workload, synthetic_video, video_background
from mama import ops
from mama.evaluate.engine import Scorer
from mama.evaluate.fusion import PAPER_WEIGHTS, fuse_offline
from mama.features.clips import INPUT_FRAMES
from mama.metrics import summarize

# UCSD Ped2's 12 test videos, frames each (2,010 in all).
PED2_TEST_FRAMES = (180, 180, 150, 180, 150, 180, 180, 180, 120, 150, 180, 180)
TARGETS = {"eval": 1000.0, "generator": 100.0, "destroyer": 250.0}  # frames/s, it/s, it/s (bf16)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: str, reps: int, warmup: int = 1) -> float:
    """Median wall seconds of `reps` calls after `warmup` calls, synchronised."""
    for _ in range(warmup):
        fn()
    sync(device)
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync(device)
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def ceilings(device: str, dry: bool) -> dict[str, float]:
    """Measured matrix rates (FLOP/s) in bf16 and fp32 (no TF32), and copy bandwidth (B/s)."""
    n = 256 if dry else 8192
    out = {}
    for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        a = torch.randn(n, n, device=device, dtype=dtype)
        out[name] = 2 * n**3 / timed(lambda: a @ a, device, reps=3 if dry else 10, warmup=1 if dry else 3)
    x = torch.empty(1 << (20 if dry else 30), device=device, dtype=torch.uint8)
    y = torch.empty_like(x)
    out["bytes"] = 2 * x.numel() / timed(lambda: y.copy_(x), device, reps=3 if dry else 10)
    return out


def _short(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}".replace("|", "/")


def share(measured_s: float, floor_s: float) -> str:
    return f"{100 * floor_s / measured_s:.0f}%"


def eval_rows(a, ceil, rows) -> None:
    dev, dry = a.device, a.dry_run
    lengths = (12, 10) if dry else PED2_TEST_FRAMES
    w = make_workload("paper", size=a.size, batch=a.batch, base=a.base, frames=40 if not dry else 8, device=dev)
    frozen, net_a = w.generator().eval().requires_grad_(False), w.destroyer().eval().requires_grad_(False)
    videos = [synthetic_video(n, a.size, 200 + i).to(dev) for i, n in enumerate(lengths)]
    backgrounds = [video_background(v) if w.background is not None else None for v in videos]
    rng = np.random.default_rng(0)
    labels = [(rng.random(n - INPUT_FRAMES) < 0.4).astype(np.uint8) for n in lengths]
    scored = sum(n - INPUT_FRAMES for n in lengths)

    def whole_set(scorer):
        streams = [scorer.video_streams(v, bg) for v, bg in zip(videos, backgrounds)]
        fused = [fuse_offline(s, PAPER_WEIGHTS, sigma=10.0) for s in streams]
        return summarize(fused, labels)

    # FLOPs per scored frame: features once per frame / pair, generator + destroyer per clip.
    probe = w.scorer(frozen, net_a, optimize=False)
    per_frame = flops(lambda: probe.video_streams(videos[0], backgrounds[0])) / (lengths[0] - INPUT_FRAMES)
    ref = w.reference()
    ref_s = timed(lambda: ref.video_streams(frozen, w.video, w.background, net_a), dev, reps=1)
    ref_fps = (w.video.shape[0] - INPUT_FRAMES) / ref_s
    rows.append(("eval, Ped2-shaped set", "reference algorithm fp32 (one video)", f"{ref_fps:.1f} frames/s", "", "1.0", ""))
    # (name, bf16, compiled, batch, inference copies: BatchNorm folded + channels_last)
    variants = [("fp32", False, False, a.batch_eval, False), ("bf16", True, False, a.batch_eval, False),
                ("bf16", True, False, 4 * a.batch_eval, False),
                ("bf16, BN folded + channels_last", True, False, 4 * a.batch_eval, True),
                ("bf16 compiled (CUDA graphs)", True, True, 4 * a.batch_eval, False)]
    if dry:  # the CPU runs bf16 slowly and compiles for minutes: one of each kind of row
        variants = [variants[0], variants[2]]
    metrics = {"micro_auc": float("nan")}
    for name, amp, compiled, batch, copies in variants:
        scorer = Scorer(frozen, w.extractor, net_a, dev, batch_size=batch, amp=amp, optimize=copies, compile=compiled)
        try:
            scorer.video_streams(videos[0], backgrounds[0])  # warm-up: cuDNN choices, graphs recorded
            sync(dev)
            t0 = time.perf_counter()
            metrics = whole_set(scorer)
            sync(dev)
            seconds = time.perf_counter() - t0
        except Exception as exc:  # noqa: BLE001  (one failed variant must not cost the GPU call the rest)
            rows.append(("eval, Ped2-shaped set", f"ours {name}, batch {batch}", f"FAILED: {_short(exc)}", "", "", ""))
            continue
        fps = scored / seconds
        floor = per_frame / ceil["bf16" if amp else "fp32"]
        met = f"target {TARGETS['eval']:.0f}: {'met' if fps >= TARGETS['eval'] else 'not met'}" if amp else ""
        rows.append(("eval, Ped2-shaped set", f"ours {name}, batch {batch}", f"{fps:.1f} frames/s ({seconds:.2f} s)",
                     share(1 / fps, floor), f"{fps / ref_fps:.1f}", met))
    rows.append(("eval, Ped2-shaped set", f"{len(lengths)} videos, {sum(lengths)} frames, {scored} scored; "
                 f"{per_frame / 1e9:.3g} GFLOP per scored frame", f"micro AUC {metrics['micro_auc']:.3f} (random labels)", "", "", ""))


def step_rows(a, ceil, rows) -> None:
    dev, dry = a.device, a.dry_run
    reps = 1 if dry else 30
    w = make_workload("paper", size=a.size, batch=a.batch, base=a.base, frames=8, device=dev)
    ref = w.reference()
    frozen = w.generator().eval().requires_grad_(False)
    for stage in ("generator", "destroyer"):
        if stage == "generator":
            net_g, net_d = w.generator(), w.discriminator()
            opt_g, opt_d = torch.optim.AdamW(net_g.parameters()), torch.optim.AdamW(net_d.parameters())
            base_s = timed(lambda: ref.generator_step(net_g, net_d, opt_g, opt_d, w.batch_items), dev, reps=1 if dry else 5)
            make = w.generator_trainer
        else:
            d0 = w.destroyer_trainer(frozen, cache=True)
            base_s = timed(lambda: ref.destroyer_step(frozen, d0.net_a, d0.opt_a, w.batch_items, d0.damage), dev,
                           reps=1 if dry else 5)
            make = lambda cache=True: w.destroyer_trainer(frozen, cache=cache)  # noqa: E731
        probe = make(cache=True)
        probe.train_step(w.batch_items)  # the features (and frozen predictions) now stored: count the step itself
        step_flops = flops(lambda: probe.train_step(w.batch_items))
        rows.append((f"{stage} step", "reference algorithm fp32", f"{1 / base_s:.1f} it/s ({base_s * 1e3:.1f} ms)", "", "1.0", ""))
        # Compiling takes a minute or two per network and precision: bf16 only.
        for name, amp, compiled in (("fp32", False, False), ("bf16", True, False), ("bf16 compiled", True, True)):
            if compiled and dry:
                rows.append((f"{stage} step", f"ours {name}", "skipped (dry run)", "", "", ""))
                continue
            t = make(cache=True)
            t.cfg.amp, t.cfg.compile = amp, compiled
            t.wrap_networks()  # compiles (CUDA graphs) when asked
            try:
                sec = timed(lambda: t.train_step(w.batch_items), dev, reps=reps, warmup=1 if dry else 5)
            except Exception as exc:  # noqa: BLE001  (as in eval_rows)
                rows.append((f"{stage} step", f"ours {name}", f"FAILED: {_short(exc)}", "", "", ""))
                continue
            floor = step_flops / ceil["bf16" if amp else "fp32"]
            met = ""
            if amp:
                met = f"target {TARGETS[stage]:.0f}: {'met' if 1 / sec >= TARGETS[stage] else 'not met'}"
            rows.append((f"{stage} step", f"ours {name}{', fused AdamW' if dev == 'cuda' else ''}",
                         f"{1 / sec:.1f} it/s ({sec * 1e3:.2f} ms)", share(sec, floor), f"{base_s / sec:.1f}", met))
        rows.append((f"{stage} step", f"{step_flops / 1e9:.3g} GFLOP per step", "", "", "", ""))


def op_rows(a, ceil, rows) -> None:
    """correlation (FlowNetC's) and warp against their floors and the peers that are installed."""
    dev, dry = a.device, a.dry_run
    g = torch.Generator().manual_seed(0)
    b, c, hw = (1, 16, 12) if dry else sizes.CORRELATION[:3]
    x1, x2 = (torch.randn(b, c, hw, hw, generator=g).to(dev) for _ in range(2))
    args = sizes.CORRELATION_ARGS
    out_channels = (2 * (args["max_disp"] // args["stride2"]) + 1) ** 2
    corr_flops = 2 * b * out_channels * hw * hw * c
    corr_bytes = 4 * (2 * x1.numel() + b * out_channels * hw * hw)
    reps = 3 if dry else 50
    t_ours = timed(lambda: ops.correlation(x1, x2, **args), dev, reps)
    floor = max(corr_flops / ceil["fp32"], corr_bytes / ceil["bytes"])
    rows.append(("correlation fwd", "ours", f"{t_ours * 1e6:.0f} us", share(t_ours, floor), "", ""))
    try:
        from spatial_correlation_sampler import SpatialCorrelationSampler

        d = args["max_disp"] // args["stride2"]
        peer = SpatialCorrelationSampler(kernel_size=1, patch_size=2 * d + 1, stride=1, padding=0,
                                         dilation_patch=args["stride2"])
        t_peer = timed(lambda: peer(x1, x2), dev, reps)
        rows.append(("correlation fwd", "spatial-correlation-sampler", f"{t_peer * 1e6:.0f} us", share(t_peer, floor),
                     f"ours {t_peer / t_ours:.1f}x faster", ""))
    except ImportError:
        rows.append(("correlation fwd", "spatial-correlation-sampler", "not installed here", "", "", ""))
    try:
        import localcorr  # noqa: F401

        rows.append(("correlation fwd", "localcorr", "installed; its call is not wired here", "", "", ""))
    except ImportError:
        rows.append(("correlation fwd", "localcorr", "not installed here", "", "", ""))
    img = 24 if dry else sizes.FRAME
    frame = torch.randn(b if dry else sizes.BATCH, 3, img, img, generator=g).to(dev)
    flow = (torch.randn(frame.shape[0], 2, img, img, generator=g) * 4).to(dev)
    t_warp = timed(lambda: ops.warp(frame, flow), dev, reps)
    warp_bytes = 4 * (2 * frame.numel() + flow.numel())
    rows.append(("warp fwd", "ours", f"{t_warp * 1e6:.0f} us", share(t_warp, warp_bytes / ceil["bytes"]), "", ""))


class Rows(list):
    def append(self, row: tuple[str, ...]) -> None:
        super().append(row)
        print("| " + " | ".join(row) + " |", flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU (checks the script)")
    p.add_argument("--parts", nargs="+", default=["ops", "steps", "eval"], choices=["ops", "steps", "eval"])
    a = p.parse_args()
    if a.dry_run:
        a.device, a.size, a.base, a.batch, a.batch_eval = "cpu", 64, 8, 1, 4
        torch.set_num_threads(1)
    else:
        if not torch.cuda.is_available():
            print("no CUDA device: run with --dry-run on the CPU", file=sys.stderr)
            return 2
        a.device, a.size, a.base, a.batch, a.batch_eval = "cuda", sizes.FRAME, 64, sizes.BATCH, 32
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 on both sides
        torch.backends.cudnn.allow_tf32 = False
    t0 = time.time()
    ceil = ceilings(a.device, a.dry_run)
    name = torch.cuda.get_device_name() if a.device == "cuda" else "cpu (dry run)"
    print(f"\n{name}, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}: {a.size}x{a.size}, base {a.base}, "
          f"batch {a.batch}, FlowNet2-SD + DeepLabv3-R101 (random weights); measured ceilings: bf16 "
          f"{ceil['bf16'] / 1e12:.0f} TFLOP/s, fp32 {ceil['fp32'] / 1e12:.0f} TFLOP/s, copy {ceil['bytes'] / 1e12:.2f} TB/s")
    print("| figure | impl | measured | share of floor | x reference | target |")
    print("|---|---|---|---|---|---|", flush=True)
    rows = Rows()  # each row printed as it is measured: a timeout still leaves the rows so far
    for part, fn in (("ops", op_rows), ("steps", step_rows), ("eval", eval_rows)):
        if part in a.parts:
            fn(a, ceil, rows)
            print(f"[{part} done at {time.time() - t0:.0f} s]", file=sys.stderr, flush=True)
    print(f"total {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
