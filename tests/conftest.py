"""Shared fixtures. The real UCSD Ped2 data lives read-only in ../shared/datasets/ped2."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import torch

# Triton kernels run on CPU under the interpreter; this must be set before triton.jit runs.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
# What runs keep for later (the feature store's shards, prepared frames) goes to a folder of this
# session, never to the user's ~/.cache/mama; subprocesses inherit it.
os.environ["MAMA_CACHE"] = tempfile.mkdtemp(prefix="mama-test-cache-")

SHARED = Path(os.environ.get("MAMA_SHARED", Path(__file__).resolve().parents[2] / "shared"))
PED2 = SHARED / "datasets" / "ped2"


@pytest.fixture(scope="session")
def ped2_root() -> Path:
    """Root holding ped2/ (the community layout), read-only."""
    assert PED2.is_dir(), f"real Ped2 data expected at {PED2} (set MAMA_SHARED to the shared/ folder)"
    return PED2.parent


@pytest.fixture(scope="session")
def tiny_synth(tmp_path_factory) -> Path:
    """A tiny synthetic dataset (3 training, 2 test videos of 40 frames at 64x64): the root
    folder holding synth/."""
    from mama.data.synth import write_dataset

    root = tmp_path_factory.mktemp("synth_root")
    write_dataset(root, name="synth", seed=0, size=64, n_train=3, n_test=2, frames_per_video=40)
    return root


@pytest.fixture(scope="session")
def tiny_run(tiny_synth, tmp_path_factory) -> dict[str, Path]:
    """A trained tiny generator and destroyer: {'root', 'generator', 'destroyer'} (final.pt paths)."""
    from mama.train.trainer import train

    from tests.support import tiny_train_config

    out = tmp_path_factory.mktemp("tiny_run")
    gen = train(tiny_train_config(tiny_synth, out / "gen", stage="generator"))
    des = train(tiny_train_config(tiny_synth, out / "des", stage="destroyer", iters=2,
                                  generator=str(gen / "final.pt")))
    return {"root": tiny_synth, "generator": gen / "final.pt", "destroyer": des / "final.pt"}

