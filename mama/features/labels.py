"""Label providers: `provider(frames, background=None) -> (N, provider.channels, H, W)`.

    deeplabv3    raw DeepLabv3-ResNet101 logits, 21 channels (weights needed, mama.models.deeplab)
    foreground   soft foreground map in [0, 1] against the video's background, 1 channel
    none         0 channels
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mama.features.base import LabelProvider
from mama.models.deeplab import NUM_CLASSES, upsample_logits


class DeepLabLabels(LabelProvider):
    """Raw DeepLabv3-ResNet101 logits (21 channels) of the BGR [-1, 1] frames, as the
    reference; cached at stride 8."""

    name = "deeplabv3"
    channels = NUM_CLASSES

    def __init__(self, model: nn.Module):
        self.model = model

    @property
    def networks(self) -> dict[str, nn.Module]:
        return {"model": self.model}

    def network_calls(self, size: int) -> dict[str, tuple[str, torch.Tensor]]:
        return {"model": ("stride8_logits", torch.zeros(1, 3, size, size))}

    @torch.no_grad()
    def coarse(self, frames, background=None):
        return self.model.stride8_logits(frames)

    def expand(self, coarse, size):
        return upsample_logits(coarse, size)


class ForegroundLabels(LabelProvider):
    """A soft foreground map in [0, 1] for a fixed camera: the max-over-channels absolute
    difference to the video's background image (mama.data.datasets.video_background), lightly
    blurred, through a smooth ramp from `low` (0) to `high` (1) (in [-1, 1] units: 0.08 ~ 10
    and 0.25 ~ 32 grey levels)."""

    name = "foreground"
    channels = 1
    uses_background = True

    def __init__(self, low: float = 0.08, high: float = 0.25, sigma: float = 1.0):
        if not 0 <= low < high:
            raise ValueError(f"need 0 <= low < high, got {low}, {high}")
        self.low, self.high = low, high
        radius = max(1, round(2 * sigma))
        x = torch.arange(-radius, radius + 1, dtype=torch.float32)
        g = torch.exp(-(x**2) / (2 * sigma**2))
        self.kernel = g / g.sum()  # separable Gaussian

    def coarse(self, frames, background=None):
        if background is None:
            raise ValueError("foreground labels need the video's background image "
                             "(mama.data.datasets.video_background)")
        if background.dim() == 3:
            background = background.unsqueeze(0)
        diff = (frames - background.to(frames)).abs().amax(dim=1, keepdim=True)
        k = self.kernel.to(frames)
        pad = len(k) // 2
        diff = F.conv2d(F.pad(diff, (pad, pad, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
        diff = F.conv2d(F.pad(diff, (0, 0, pad, pad), mode="replicate"), k.view(1, 1, -1, 1))
        t = ((diff - self.low) / (self.high - self.low)).clamp(0, 1)
        return t * t * (3 - 2 * t)  # smoothstep


class NoLabels(LabelProvider):
    name = "none"
    channels = 0

    def coarse(self, frames, background=None):
        return frames.new_zeros(frames.shape[0], 0, *frames.shape[-2:])
