"""PatchGAN discriminator for the generator's LSGAN adversarial loss.

The reference code's discriminator (the pix2pix-style "PixelDiscriminator" of the paper
repository): five 4x4 convolutions, every one with padding 2, strides 2, 2, 2, 1, 1,
channels 3 -> 128 -> 256 -> 512 -> 512 -> 1, a LeakyReLU(0.2) after each but the last, and
a sigmoid on the output; the LSGAN loss is taken against that sigmoid. A 256x256 input
gives a (B, 1, 35, 35) patch map (256 -> 129 -> 65 -> 33 -> 34 -> 35).

Module (state-dict) layout, the reference's, so its 'net_d' loads strictly:

    net     Sequential(conv, LeakyReLU, conv, LeakyReLU, conv, LeakyReLU, conv, LeakyReLU, conv)
            keys net.0, net.2, net.4, net.6 (the hidden convs, weight + bias) and net.8 (-> 1)
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

KERNEL, PADDING = 4, 2


class PatchDiscriminator(nn.Module):
    """PatchGAN: per-patch probability that the input frame is real."""

    def __init__(self, in_channels: int = 3, widths: tuple[int, ...] = (128, 256, 512, 512)) -> None:
        super().__init__()
        if in_channels < 1 or len(widths) < 1 or min(widths) < 1:
            raise ValueError(f"PatchDiscriminator: bad sizes in={in_channels} widths={widths}")
        self.in_channels = in_channels
        self.widths = tuple(widths)
        layers: list[nn.Module] = []
        prev = in_channels
        for i, width in enumerate(widths):
            stride = 2 if i < len(widths) - 1 else 1  # the last hidden conv keeps the resolution
            layers += [nn.Conv2d(prev, width, KERNEL, stride=stride, padding=PADDING), nn.LeakyReLU(0.2, inplace=True)]
            prev = width
        layers.append(nn.Conv2d(prev, 1, KERNEL, stride=1, padding=PADDING))
        self.net = nn.Sequential(*layers)
        self.apply(_init_weights)

    def forward(self, x: Tensor) -> Tensor:
        """x (B, in_channels, H, W) -> (B, 1, h, w) probabilities."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"PatchDiscriminator: input must be (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        return torch.sigmoid(self.net(x))


def _init_weights(module: nn.Module) -> None:
    """The reference's discriminator init: conv weights ~ N(0, 0.02); biases keep PyTorch's default."""
    if isinstance(module, nn.Conv2d):
        nn.init.normal_(module.weight, 0.0, 0.02)


def widths_from_state_dict(state_dict: dict) -> tuple[int, ...]:
    """The hidden widths of a discriminator state dict (net.0, net.2, ... before the last conv)."""
    convs = sorted((int(k.split(".")[1]), v) for k, v in state_dict.items()
                   if k.startswith("net.") and k.endswith(".weight"))
    return tuple(int(v.shape[0]) for _, v in convs[:-1])


def checkpoint_filter_fn(state_dict: dict, model: PatchDiscriminator | None = None) -> dict:
    """Turn a foreign checkpoint into this model's state dict.

    Recognised: a reference-code training checkpoint (a dict holding 'net_d') -> its
    'net_d'. The reference's names are this model's.
    """
    return state_dict["net_d"] if "net_d" in state_dict else state_dict
