"""Shared fixtures. The real UCSD Ped2 data lives read-only in ../shared/datasets/ped2."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Triton kernels run on CPU under the interpreter; this must be set before triton.jit runs.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

SHARED = Path(os.environ.get("MAMA_SHARED", Path(__file__).resolve().parents[2] / "shared"))
PED2 = SHARED / "datasets" / "ped2"


@pytest.fixture(scope="session")
def ped2_root() -> Path:
    """Root holding ped2/ (the community layout), read-only."""
    assert PED2.is_dir(), f"real Ped2 data expected at {PED2} (set MAMA_SHARED to the shared/ folder)"
    return PED2.parent
