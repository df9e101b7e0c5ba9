"""DeepLabv3-ResNet101 semantic logits, the F2LM label stream.

Chen et al., "Rethinking Atrous Convolution for Semantic Image Segmentation" (2017). The
architecture is torchvision's `deeplabv3_resnet101` (21 classes, output stride 8); the
weights are torchvision's COCO-with-VOC-labels file, loaded from a local path (never
downloaded here: see mama.weights). As in the paper's reference code, the BGR [-1, 1]
frames go in as they are (no ImageNet normalisation) and the raw 'out' logits are the
labels; the auxiliary head is not used.

The exact cache point is the stride-8 logits (`stride8_logits`): the rest of the forward
pass is a deterministic x8 bilinear upsampling (`upsample_logits`).
"""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.segmentation import deeplabv3_resnet101

from mama.errors import MamaError
from mama.models.checkpoint import read_file, state_dict_mismatch

NUM_CLASSES = 21


class DeepLabV3Logits(nn.Module):
    """torchvision DeepLabv3-ResNet101 without its aux head, with the stride-8 cache exposed."""

    def __init__(self) -> None:
        super().__init__()
        # weights=None and weights_backbone=None: torchvision must never download here.
        self.net = deeplabv3_resnet101(weights=None, weights_backbone=None, num_classes=NUM_CLASSES,
                                       aux_loss=False)

    def stride8_logits(self, frames: torch.Tensor) -> torch.Tensor:
        """(N,3,H,W) frames -> (N,21,~H/8,~W/8) logits before the final upsampling."""
        return self.net.classifier(self.net.backbone(frames)["out"])

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """(N,3,H,W) frames -> (N,21,H,W) logits, torchvision's 'out'."""
        return upsample_logits(self.stride8_logits(frames), frames.shape[-2:])


def upsample_logits(logits: torch.Tensor, size) -> torch.Tensor:
    """The deterministic tail of DeepLabv3: bilinear (align_corners=False) to the frame size."""
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)


def build_deeplabv3(weights: str | os.PathLike | None = None, device="cpu") -> DeepLabV3Logits:
    """The model in eval mode on `device`: random init when `weights` is None, else the file
    loaded strictly (a file for another architecture raises a MamaError naming it)."""
    state = None if weights is None else read_file(weights, "deeplab")  # a bad file fails fast
    if state is not None and not any(k.startswith("backbone.") for k in state):
        _reject(weights, "no backbone.* keys")  # clearly another network: skip building ResNet-101
    model = DeepLabV3Logits()
    if state is not None:
        mismatch = state_dict_mismatch(model.net, state)
        if mismatch:
            _reject(weights, mismatch)
        model.net.load_state_dict(state, strict=True)
    return model.to(device).eval().requires_grad_(False)


def _reject(path, why: str):
    raise MamaError(f"{path} is not a deeplabv3_resnet101 state dict ({why}); "
                    f"use torchvision's deeplabv3_resnet101_coco-586e9e4e.pth")
