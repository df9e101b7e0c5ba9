"""PatchGAN discriminator for the generator's LSGAN adversarial loss.

As in the paper's reference code (the future-frame-prediction discriminator): four 4x4
convs 3 -> 128 -> 256 -> 512 (stride 2, LeakyReLU 0.2) -> 512 (stride 1, LeakyReLU 0.2),
then a 4x4 stride-1 conv to one channel and a sigmoid; the LSGAN loss is taken against
that sigmoid output. A 256x256 input gives a (B, 1, 30, 30) patch map.

Module (state-dict) layout, for widths (w1, .., wn):

    conv1 .. conv{n}     Sequential(Conv2d k4 p1 (stride 2, stride 1 for the last), LeakyReLU)
                         keys conv{i}.0.weight (w_i, w_{i-1}, 4, 4), conv{i}.0.bias (w_i,)
    out_conv             Sequential(Conv2d k4 s1 p1 wn -> 1)
                         keys out_conv.0.weight (1, wn, 4, 4), out_conv.0.bias (1,)

This is the layout of the reference authors' discriminator as published in their
future-frame-prediction code; the paper repository ships it only as bytecode, so a
reference 'net_d' that differs is reported by the strict loader (mama.models.checkpoint).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from mama.models.layers import strip_module_prefix


class PatchDiscriminator(nn.Module):
    """PatchGAN: per-patch probability that the input frame is real."""

    def __init__(self, in_channels: int = 3, widths: tuple[int, ...] = (128, 256, 512, 512)) -> None:
        super().__init__()
        if in_channels < 1 or len(widths) < 1 or min(widths) < 1:
            raise ValueError(f"PatchDiscriminator: bad sizes in={in_channels} widths={widths}")
        self.in_channels = in_channels
        self.widths = tuple(widths)
        prev = in_channels
        for i, width in enumerate(widths):
            stride = 2 if i < len(widths) - 1 else 1  # the last conv keeps the resolution
            layer = nn.Sequential(
                nn.Conv2d(prev, width, 4, stride=stride, padding=1), nn.LeakyReLU(0.2, inplace=True)
            )
            self.add_module(f"conv{i + 1}", layer)
            prev = width
        self.out_conv = nn.Sequential(nn.Conv2d(prev, 1, 4, stride=1, padding=1))
        self.apply(_init_weights)

    def forward(self, x: Tensor) -> Tensor:
        """x (B, in_channels, H, W) -> (B, 1, h, w) probabilities."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"PatchDiscriminator: input must be (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        for i in range(len(self.widths)):
            x = getattr(self, f"conv{i + 1}")(x)
        return torch.sigmoid(self.out_conv(x))


def _init_weights(module: nn.Module) -> None:
    """The reference's discriminator init: conv weights ~ N(0, 0.02); biases keep PyTorch's default."""
    if isinstance(module, nn.Conv2d):
        nn.init.normal_(module.weight, 0.0, 0.02)


def checkpoint_filter_fn(state_dict: dict, model: PatchDiscriminator | None = None) -> dict:
    """Turn a foreign checkpoint into this model's state dict.

    Recognised: a reference-code training checkpoint (a dict holding 'net_d') -> its
    'net_d'; keys prefixed `module.`. No key is renamed.
    """
    if "net_d" in state_dict:
        state_dict = state_dict["net_d"]
    return strip_module_prefix(state_dict)
