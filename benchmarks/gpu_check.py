"""GPU check of the custom ops: on CUDA, every op's Triton kernel (reached through
torch.ops.mama on CUDA tensors) against the plain-PyTorch reference — forward and every
input gradient — then timings (triton.testing.do_bench, median ms) against that reference.

Run by benchmarks/gpu_check.sh on a CUDA machine; prints one table. `--device cpu` runs the
same checks against the C++ kernels (a dry run of the script, used by the tests)."""
from __future__ import annotations

import argparse
import sys
import time

import torch

from benchmarks import sizes
from mama import ops, reference


def _cases(device, small: bool):
    """(name, ours, ref, make_inputs, grad_inputs): real sizes unless `small`."""
    g = torch.Generator(device="cpu").manual_seed(0)

    def rand(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g) * scale).to(device)

    b = 1 if small else sizes.BATCH
    c, hw = (16, 12) if small else sizes.CORRELATION[1:3]
    img = 24 if small else sizes.FRAME
    feat = (b, 32, 8, 8) if small else sizes.BOTTLENECK
    patch, destroy = (8, 32) if small else (sizes.DESTROY_PATCH, sizes.DESTROY[-1])
    corr_args = (*sizes.CORRELATION_ARGS.values(), 0.1)
    return [
        ("correlation (FlowNetC)", lambda a, b_: ops.correlation(a, b_, *corr_args[:-1], negative_slope=0.1),
         lambda a, b_: reference.correlation(a, b_, *corr_args),
         lambda: [rand(b, c, hw, hw), rand(b, c, hw, hw)]),
        ("warp", ops.warp, reference.warp, lambda: [rand(b, 3, img, img), rand(b, 2, img, img, scale=4.0)]),
        ("warp_residual", ops.warp_residual, reference.warp_residual,
         lambda: [rand(b, 3, img, img), rand(b, 3, img, img), rand(b, 2, img, img, scale=4.0)]),
        ("bottleneck_sim", lambda *x: ops.bottleneck_sim(*x, margin=0.2), lambda *x: reference.bottleneck_sim(*x, 0.2),
         lambda: [rand(*feat) for _ in range(5)]),
        ("patch_destroy_loss", lambda *x: ops.patch_destroy_loss(*x, patch=patch, ld=4.0),
         lambda *x: reference.patch_destroy_loss(*x, patch, 4.0),
         lambda: [rand(b, 3, destroy, destroy).tanh() for _ in range(4)]
         + [torch.full((b, 3, destroy, destroy), -1.0, device=device)]),
    ]


def _outputs(x):
    return x if isinstance(x, tuple) else (x,)


def check(device: str, small: bool) -> list[dict]:
    rows = []
    for name, ours, ref, make in _cases(device, small):
        inputs = make()
        # patch_destroy_loss: only G (index 3) takes gradient; the others: every input.
        grad_idx = [3] if name == "patch_destroy_loss" else list(range(len(inputs)))
        xs_o = [x.clone().requires_grad_(i in grad_idx) for i, x in enumerate(inputs)]
        xs_r = [x.clone().requires_grad_(i in grad_idx) for i, x in enumerate(inputs)]
        out_o, out_r = _outputs(ours(*xs_o)), _outputs(ref(*xs_r))
        fwd_err = max(float((o.detach().float() - r.detach().float()).abs().max() / (r.detach().float().abs().max() + 1e-6))
                      for o, r in zip(out_o, out_r))
        seeds = [torch.randn_like(r) for r in out_r]
        go = torch.autograd.grad(out_o, [xs_o[i] for i in grad_idx], seeds)
        gr = torch.autograd.grad(out_r, [xs_r[i] for i in grad_idx], seeds)
        bwd_err = max(float((a - r).abs().max() / (r.abs().max() + 1e-6)) for a, r in zip(go, gr))

        def timed(fn, xs):
            if device == "cuda":
                from triton.testing import do_bench

                return do_bench(lambda: fn(*xs), warmup=10, rep=50)
            t = time.perf_counter()
            for _ in range(3):
                fn(*xs)
            return (time.perf_counter() - t) / 3 * 1e3

        with torch.no_grad():
            t_o, t_r = timed(ours, inputs), timed(ref, inputs)
        t_loop = None
        if name == "patch_destroy_loss":  # the reference code's algorithm: a loop per sample and patch
            with torch.no_grad():
                t_loop = timed(lambda *x: reference.patch_destroy_loss_loop(*x, 32 if not small else 8, 4.0), inputs)
        rows.append({"op": name, "fwd_rel_err": fwd_err, "bwd_rel_err": bwd_err, "ours_ms": t_o, "ref_ms": t_r,
                     "loop_ms": t_loop})
    return rows


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--small", action="store_true", help="tiny sizes (dry run)")
    args = ap.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device visible", file=sys.stderr)
        return 2
    rows = check(args.device, args.small)
    name = torch.cuda.get_device_name() if args.device == "cuda" else "CPU (C++ kernels)"
    print(f"\nmama ops on {name}; torch {torch.__version__}; sizes {'small' if args.small else 'real'}")
    print(f"{'op':<24}{'fwd err':>10}{'bwd err':>10}{'ours ms':>10}{'ref ms':>10}{'speedup':>9}{'vs loop':>9}")
    bad = False
    for r in rows:
        ok = r["fwd_rel_err"] < 1e-3 and r["bwd_rel_err"] < 1e-3
        bad |= not ok
        loop = f"{r['loop_ms'] / r['ours_ms']:8.1f}x" if r["loop_ms"] else f"{'':>9}"
        print(f"{r['op']:<24}{r['fwd_rel_err']:>10.1e}{r['bwd_rel_err']:>10.1e}{r['ours_ms']:>10.3f}{r['ref_ms']:>10.3f}"
              f"{r['ref_ms'] / r['ours_ms']:>8.1f}x{loop}{'' if ok else '  MISMATCH'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
