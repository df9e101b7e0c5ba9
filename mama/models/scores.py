"""The per-frame score streams the generator's outputs define (docs/design.md), shared by training
(the sim terms are also losses) and scoring.

    sse                 mean squared error of a prediction on [0, 1]-rescaled frames
    sim_motion, sim_label
                        the two triplet hinge terms at the bottleneck (anchor x_y / x_z,
                        positive y4 / z4, negative x4), margin TRIPLET_MARGIN
"""
from __future__ import annotations

import torch
from torch import Tensor

from mama import ops

TRIPLET_MARGIN = 0.2  # the reference code's margin for both triplet terms


def frame_sse(pred: Tensor, target: Tensor) -> Tensor:
    """The SSE score stream: per-sample mean squared error on [0, 1]-rescaled frames."""
    return torch.mean(((pred + 1) / 2 - (target + 1) / 2) ** 2, dim=(1, 2, 3))


def bottleneck_sims(out, margin: float = TRIPLET_MARGIN) -> tuple[Tensor, Tensor | None]:
    """Per-sample (sim_motion, sim_label) of a GeneratorOutput; sim_label is None without a
    label branch. The training loss and the score streams both come from here."""
    has_labels = out.z4 is not None
    # The op takes both triplets; without labels the motion pair stands in and is dropped.
    z4, x_z = (out.z4, out.x_z) if has_labels else (out.y4, out.x_y)
    sim_m, sim_l = ops.bottleneck_sim(out.x4.float(), out.y4.float(), out.x_y.float(), z4.float(), x_z.float(), margin)
    return sim_m, (sim_l if has_labels else None)
