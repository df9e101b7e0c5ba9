"""Destroyer: a plain U-Net that paints background over the low-quality regions of a frame.

"Making Anomalies More Anomalous" (Hong et al., IEEE Access 2024), stage 2. It reads the
frozen generator's predicted frame and returns a "destroyed" frame (tanh, [-1, 1]); it is
trained self-supervised on predictions with synthetic patch damage (docs/design.md).

Module (state-dict) layout, the same as the reference code's 'net_a' (base b = 64 there):

    inc, down1, down2, down3      encoder  in -> b, 2b, 4b, 8b
    up1, up2, up3                 UpBlock  8b->4b, 4b->2b, 2b->b (skips from the encoder)
    outc                          Conv2d b -> out, 3x3 (pad 1, bias), then tanh
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from mama.models.layers import decoder_stages, encoder_stages


class Destroyer(nn.Module):
    """U-Net in_channels -> out_channels (no SE, no extra branches), tanh output."""

    def __init__(self, in_channels: int = 3, out_channels: int = 3, base: int = 64) -> None:
        super().__init__()
        if in_channels < 1 or out_channels < 1 or base < 1:
            raise ValueError(f"Destroyer: bad sizes in={in_channels} out={out_channels} base={base}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.base = base
        self.inc, self.down1, self.down2, self.down3 = encoder_stages(in_channels, base)
        self.up1, self.up2, self.up3 = decoder_stages(base)
        self.outc = nn.Conv2d(base, out_channels, 3, padding=1)
        self.apply(_init_weights)

    def forward(self, x: Tensor) -> Tensor:
        """x (B, in_channels, H, W) -> (B, out_channels, H, W) in [-1, 1]."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"Destroyer: input must be (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        x1 = self.inc(x)
        x2 = self.down1(x1)
        x3 = self.down2(x2)
        x4 = self.down3(x3)
        x = self.up1(x4, x3)
        x = self.up2(x, x2)
        x = self.up3(x, x1)
        return torch.tanh(self.outc(x))


def _init_weights(module: nn.Module) -> None:
    """The reference's destroyer init: every Conv2d and ConvTranspose2d weight ~ N(0, 0.02)
    (their biases keep PyTorch's default), BatchNorm weight ~ N(1, 0.02) and bias 0."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def checkpoint_filter_fn(state_dict: dict, model: Destroyer | None = None) -> dict:
    """Turn a foreign checkpoint into this model's state dict.

    Recognised: a reference-code destroyer-stage checkpoint (a dict holding 'net_a' beside
    'net_g', 'net_d', optimiser states, 'step') -> its 'net_a'. The reference's module names
    are this model's, so no key is renamed.
    """
    return state_dict["net_a"] if "net_a" in state_dict else state_dict
