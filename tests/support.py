"""Helpers shared by tests (importable as tests.support; pytest puts the repo root on sys.path)."""
from __future__ import annotations

from pathlib import Path


def tiny_train_config(root: Path, out: Path, **kw):
    """The smallest real training configuration: 32x32 frames, width 8, weight-free providers."""
    from mama.config import TrainConfig

    base = dict(dataset="synth", data_root=str(root), out=str(out), preset="fast", size=32, base=8,
                batch_size=2, iters=4, save_interval=2, val_interval=2, val_clips=4, num_workers=0,
                device="cpu", seed=0, calibrate_videos=2)
    base.update(kw)
    return TrainConfig(**base)
