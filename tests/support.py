"""Helpers shared by tests (importable as tests.support; pytest puts the repo root on sys.path)."""
from __future__ import annotations

import contextlib
from pathlib import Path

import torch

# Where the Triton launchers run in tests: CUDA when present, else the CPU interpreter.
TRITON_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@contextlib.contextmanager
def poisoned_empty():
    """Make every torch.empty / at::empty fill float memory with NaN, so an output element a
    kernel forgets to write shows up as NaN."""
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    was_fill = torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was_deterministic)
        torch.utils.deterministic.fill_uninitialized_memory = was_fill


def assert_close(got: torch.Tensor, want: torch.Tensor, tol: dict) -> None:
    """`got` is finite (an output element a kernel forgot to write is not) and equals `want`
    within tol = dict(rtol=..., atol=...)."""
    assert torch.isfinite(got).all(), "kernel left non-finite values (unwritten output?)"
    torch.testing.assert_close(got, want, **tol)


def tiny_train_config(root: Path, out: Path, **kw):
    """The smallest real training configuration: 32x32 frames, width 8, weight-free providers."""
    from mama.config import TrainConfig

    base = dict(dataset="synth", data_root=str(root), out=str(out), preset="fast", size=32, base=8,
                batch_size=2, iters=4, save_interval=2, val_interval=2, val_clips=4, num_workers=0,
                device="cpu", seed=0, calibrate_videos=2)
    base.update(kw)
    return TrainConfig(**base)
