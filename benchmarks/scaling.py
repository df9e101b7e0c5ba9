"""How the end-to-end figures grow with image size and batch size: ours vs the baseline.

    python benchmarks/scaling.py [--base 16] [--providers light] [--budget 600] [--threads 1]

Two sweeps (not the full cross product, to stay within a CPU budget): image size 64, 128,
256 at batch 4, and batch 1, 4, 16 at size 64. Each cell is one timed run after one warm-up
run (ours' feature cache is filled by the warm-up). Prints a Markdown table; a cell whose
sweep ran out of the time budget is marked "-".
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from benchmarks.workload import make_workload  # noqa: E402

EVAL_FRAMES = 12


def timed(fn) -> float:
    fn()  # warm-up: fills caches, allocators, the DIS objects
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure(providers: str, size: int, batch: int, base: int) -> dict[str, float]:
    w = make_workload(providers, size=size, batch=batch, base=base, frames=EVAL_FRAMES)
    ref = w.reference()
    row = {}
    trainer = w.generator_trainer(cache=True)
    row["gen ours"] = timed(lambda: trainer.train_step(w.batch_items))
    net_g, net_d = w.generator(), w.discriminator()
    opt_g, opt_d = torch.optim.AdamW(net_g.parameters()), torch.optim.AdamW(net_d.parameters())
    row["gen base"] = timed(lambda: ref.generator_step(net_g, net_d, opt_g, opt_d, w.batch_items))
    frozen = w.generator().eval().requires_grad_(False)
    des = w.destroyer_trainer(frozen, cache=True)
    row["des ours"] = timed(lambda: des.train_step(w.batch_items))
    row["des base"] = timed(lambda: ref.destroyer_step(frozen, des.net_a, des.opt_a, w.batch_items, des.damage))
    net_a = w.destroyer().eval()
    scorer = w.scorer(frozen, net_a)
    scorer.batch_size = max(batch, 1)
    scored = EVAL_FRAMES - 4
    row["eval fps ours"] = scored / timed(lambda: scorer.video_streams(w.video, w.background))
    row["eval fps base"] = scored / timed(lambda: ref.video_streams(frozen, w.video, w.background, net_a))
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--providers", default="light", choices=("light", "paper"))
    ap.add_argument("--base", type=int, default=16, help="generator/destroyer width (paper: 64)")
    ap.add_argument("--budget", type=float, default=600.0, help="seconds for the whole sweep")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cells = [(s, 4) for s in (64, 128, 256)] + [(64, b) for b in (1, 16)]
    start = time.perf_counter()
    cols = ["gen ours", "gen base", "des ours", "des base", "eval fps ours", "eval fps base"]
    print(f"providers={args.providers} base={args.base} threads={args.threads} eval video={EVAL_FRAMES} frames")
    print("| size | batch | " + " | ".join(cols) + " | gen x | des x | eval x |")
    print("|" + "---|" * (len(cols) + 5))
    for size, batch in sorted(cells, key=lambda c: (c[1] != 4, c)):
        if time.perf_counter() - start > args.budget:
            print(f"| {size} | {batch} | " + " | ".join("-" for _ in cols) + " | - | - | - |")
            continue
        r = measure(args.providers, size, batch, args.base)
        vals = [f"{r[c]:.2f}" + ("" if "fps" in c else " s") for c in cols]
        ratios = (r["gen base"] / r["gen ours"], r["des base"] / r["des ours"], r["eval fps ours"] / r["eval fps base"])
        print(f"| {size} | {batch} | " + " | ".join(vals) + " | " + " | ".join(f"{x:.1f}" for x in ratios) + " |",
              flush=True)
    print(f"total {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
