"""How much of NORMAL video a destroyer destroys: the share of pixels of training frames whose
damage |destroyed - prediction| exceeds mama.evaluate.localisation.DESTROYED. Training video
is normal, so every destroyed pixel there is a false destruction; no label of any kind is used.

    python scripts/destroyer_damage.py --dataset synth --data-root data RUN/final.pt [RUN2/final.pt ...]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from mama.data.datasets import load_video_frames, make_samples, video_background
from mama.evaluate.engine import Scorer
from mama.evaluate.localisation import DESTROYED
from mama.features.registry import build_extractor
from mama.models.build import models_from_run
from mama.models.checkpoint import read_file


def destroyed_share(checkpoint: Path, dataset: str, data_root: Path, videos: int) -> float:
    payload = read_file(checkpoint, "run")
    net_g, net_a, meta = models_from_run(payload, checkpoint, need_destroyer=True)
    scorer = Scorer(net_g.eval(), build_extractor(meta["motion"], meta["labels"]), net_a.eval())
    size = meta["size"]
    above = total = 0
    for v in make_samples(dataset, data_root, "training")[:videos]:
        frames = load_video_frames(v, (size, size))
        bg = video_background(frames) if scorer.extractor.needs_background else None
        for _, _, damage in scorer.video_maps(frames, bg):
            above += int((damage > DESTROYED).sum())
            total += damage.size
    return above / total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoints", type=Path, nargs="+", help="destroyer-stage final.pt files")
    ap.add_argument("--dataset", default="synth")
    ap.add_argument("--data-root", type=Path, default=Path("data"))
    ap.add_argument("--videos", type=int, default=2, help="training videos to look at")
    args = ap.parse_args()
    torch.set_num_threads(1)
    shares = []
    for ckpt in args.checkpoints:
        shares.append(destroyed_share(ckpt, args.dataset, args.data_root, args.videos))
        print(f"{ckpt}: {shares[-1]:.1%} of normal training pixels destroyed (damage > {DESTROYED:g})")
    if len(shares) > 1:
        print(f"mean {np.mean(shares):.1%} +- {np.std(shares, ddof=1):.1%} over {len(shares)}")


if __name__ == "__main__":
    main()
