"""Training losses of the generator stage (docs/design.md); the destroyer's is mama.ops.patch_destroy_loss,
the sim terms are mama.models.scores.bottleneck_sims (they are score streams too)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mama.models.scores import frame_sse


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
    return 10 * torch.log10(1.0 / frame_sse(pred, target).clamp_min(1e-10))
