"""What the generator reads for one clip.

A clip is CLIP_LEN consecutive frames (defined once, in mama.config): INPUT_FRAMES frames in,
the last one predicted (its target). Channels are frame-major: frame 1's channels, then frame
2's, and so on.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from mama.config import CLIP_LEN, INPUT_FRAMES  # noqa: F401  (re-exported: the clip's names live beside its assembly)


class ClipInputs(NamedTuple):
    """The generator's inputs for B clips."""

    frames: torch.Tensor  # (B, 12, H, W): f1 BGR, f2 BGR, f3 BGR, f4 BGR
    flows: torch.Tensor  # (B, 6, H, W): pairs 1-2, 2-3, 3-4, each (x, y), times flow_scale
    labels: torch.Tensor | None  # (B, 4*C, H, W): f1c0..f1c{C-1}, f2c0, ...; None if C == 0
    target: torch.Tensor  # (B, 3, H, W): frame 5
