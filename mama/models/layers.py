"""Shared building blocks of the F2LM generator and the Destroyer (U-Net parts, SE).

The module layout reproduces the reference code's (the classic future-frame-prediction
U-Net, as modified by the paper's authors) so that its checkpoints load by name:

    DoubleConv        conv.0 (3x3, no bias)  conv.1 (BN)  conv.3 (3x3, no bias)  conv.4 (BN)
    InBlock           conv.<DoubleConv>                    e.g. inc.conv.conv.0.weight
    DownBlock         mpconv.0 (maxpool 2)  mpconv.1.<DoubleConv>
                                                           e.g. down1.mpconv.1.conv.0.weight
    UpBlock           up (ConvTranspose2d in -> in//2, k2 s2)  conv.<DoubleConv>(in -> out)
                                                           e.g. up1.up.weight, up1.conv.conv.0.weight
    SqueezeExcite     fc1 (C -> C/r, bias)  fc2 (C/r -> C, bias)

Facts of the reference worth keeping in mind: its 3x3 convs have no bias (BN follows),
the SE linears do have a bias, and the up block concatenates [skip, upsampled] in that order.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class DoubleConv(nn.Module):
    """(3x3 conv -> BN -> ReLU) twice; the unit every U-Net stage is made of."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class InBlock(nn.Module):
    """The first encoder stage at full resolution (a DoubleConv under the name `conv`)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = DoubleConv(in_channels, out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class DownBlock(nn.Module):
    """Halve the resolution (2x2 max-pool), then a DoubleConv."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.mpconv = nn.Sequential(nn.MaxPool2d(2), DoubleConv(in_channels, out_channels))

    def forward(self, x: Tensor) -> Tensor:
        return self.mpconv(x)


class UpBlock(nn.Module):
    """Double the resolution (transposed conv to in//2 channels), join the skip, DoubleConv.

    The skip must have in_channels - in_channels // 2 channels (the encoder width of that
    stage). When the input side was odd the upsampled map is one pixel short; it is
    zero-padded (split as evenly as possible) to the skip's size, as in the reference.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, in_channels // 2, 2, stride=2)
        self.conv = DoubleConv(in_channels, out_channels)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        x = self.up(x)
        dy = skip.shape[-2] - x.shape[-2]
        dx = skip.shape[-1] - x.shape[-1]
        if dy or dx:
            x = F.pad(x, (dx // 2, dx - dx // 2, dy // 2, dy - dy // 2))
        return self.conv(torch.cat([skip, x], dim=1))


class SqueezeExcite(nn.Module):
    """Channel attention: global average pool -> FC -> ReLU -> FC -> sigmoid -> rescale."""

    def __init__(self, channels: int, reduction: int = 8) -> None:
        super().__init__()
        if channels // reduction < 1:
            raise ValueError(f"SqueezeExcite: {channels} channels cannot be reduced by {reduction}")
        self.fc1 = nn.Linear(channels, channels // reduction, bias=True)
        self.fc2 = nn.Linear(channels // reduction, channels, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        squeezed = x.mean(dim=(2, 3))
        gate = torch.sigmoid(self.fc2(F.relu(self.fc1(squeezed))))
        return x * gate[:, :, None, None]


def encoder_stages(in_channels: int, base: int) -> list[nn.Module]:
    """The four encoder stages (in, down1, down2, down3) with widths base, 2b, 4b, 8b."""
    return [
        InBlock(in_channels, base),
        DownBlock(base, 2 * base),
        DownBlock(2 * base, 4 * base),
        DownBlock(4 * base, 8 * base),
    ]


def decoder_stages(base: int) -> list[nn.Module]:
    """The three decoder stages (up1, up2, up3) from width 8b back to b."""
    return [UpBlock(8 * base, 4 * base), UpBlock(4 * base, 2 * base), UpBlock(2 * base, base)]
