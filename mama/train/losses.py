"""Training losses of the generator stage (DESIGN §5); the destroyer's is mama.ops.patch_destroy_loss."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mama import ops

TRIPLET_MARGIN = 0.2  # the reference code's margin for both triplet terms


def intensity_loss(pred: Tensor, target: Tensor) -> Tensor:
    return torch.mean((pred - target) ** 2)


def _abs_grads(x: Tensor) -> tuple[Tensor, Tensor]:
    # Differences to the right / bottom neighbour; the image is zero-padded on the right and
    # bottom, so the last column/row differs against 0 (as the reference computes it).
    px = F.pad(x, (0, 1, 0, 0))
    py = F.pad(x, (0, 0, 0, 1))
    return (px[..., :, 1:] - px[..., :, :-1]).abs(), (py[..., 1:, :] - py[..., :-1, :]).abs()


def gradient_loss(pred: Tensor, target: Tensor) -> Tensor:
    pdx, pdy = _abs_grads(pred)
    tdx, tdy = _abs_grads(target)
    return torch.mean((pdx - tdx).abs() + (pdy - tdy).abs())


def generator_adversarial_loss(fake_logits: Tensor) -> Tensor:
    """LSGAN: the generator wants D(fake) = 1. D ends in a sigmoid, so these are probabilities."""
    return torch.mean((fake_logits - 1) ** 2 / 2)


def discriminator_loss(real_out: Tensor, fake_out: Tensor) -> Tensor:
    """LSGAN: D(real) -> 1, D(fake) -> 0."""
    return torch.mean((real_out - 1) ** 2 / 2) + torch.mean(fake_out**2 / 2)


def psnr(pred: Tensor, target: Tensor) -> Tensor:
    """Per-sample PSNR of images in [-1, 1] (rescaled to [0, 1])."""
    mse = torch.mean(((pred + 1) / 2 - (target + 1) / 2) ** 2, dim=(1, 2, 3))
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-10))


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
