"""What the generator reads for one clip: the one definition of the clip length.

A clip is CLIP_LEN consecutive frames: INPUT_FRAMES frames in, the last one predicted (its
target). Channels are frame-major (DESIGN §5): frame 1's channels, then frame 2's, and so on.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

CLIP_LEN = 5  # frames per clip; also the fewest a video may have
INPUT_FRAMES = CLIP_LEN - 1  # frames in; the fifth is predicted


class ClipInputs(NamedTuple):
    """The generator's inputs for B clips."""

    frames: torch.Tensor  # (B, 12, H, W): f1 BGR, f2 BGR, f3 BGR, f4 BGR
    flows: torch.Tensor  # (B, 6, H, W): pairs 1-2, 2-3, 3-4, each (x, y), times flow_scale
    labels: torch.Tensor | None  # (B, 4*C, H, W): f1c0..f1c{C-1}, f2c0, ...; None if C == 0
    target: torch.Tensor  # (B, 3, H, W): frame 5
