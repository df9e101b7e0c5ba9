"""The provider interfaces: what a motion and a label provider compute for the generator.

Frames are always (N, 3, H, W) float32 BGR in [-1, 1] (docs/design.md).

Every provider splits its work at its exact cache point: `coarse(...)` computes what is worth
keeping (DeepLab's stride-8 logits, FlowNet2-SD's flow before its x4 upsampling, the full map
for the others) and `expand(coarse, size)` finishes it deterministically. A provider that runs
networks lists them in `networks` and makes a copy with others by `with_networks` (the
inference copies of mama.models.inference).
"""
from __future__ import annotations

import copy

import torch
from torch import nn


def check_frames(frames: torch.Tensor, what: str) -> None:
    if frames.dim() != 4 or frames.shape[1] != 3:
        raise ValueError(f"{what} must be (N, 3, H, W) BGR frames, got {tuple(frames.shape)}")


class Provider:
    name = ""
    # What the provider computes with, set by the registry that builds it (mama.features.registry):
    # its weight file as "name|size|mtime_ns", "none" for a weight-free one. None (a provider built
    # by hand): its outputs cannot be named, so a feature store keeps nothing of them on disk.
    weights_id: str | None = None

    @property
    def networks(self) -> dict[str, nn.Module]:
        """The networks this provider runs, by attribute name (none for the weight-free ones)."""
        return {}

    def network_calls(self, size: int) -> dict[str, tuple[str, torch.Tensor]]:
        """For each network (by attribute name) the method this provider calls and an input of
        one frame (pair) at `size`: what an ONNX export traces (mama.models.onnx)."""
        return {}

    def with_networks(self, networks: dict[str, nn.Module]) -> "Provider":
        """A copy of this provider running `networks` (same names) instead of its own."""
        other = copy.copy(self)
        for attr, net in networks.items():
            setattr(other, attr, net)
        return other


class MotionProvider(Provider):
    """Flow from prev to nxt in pixels, (N, 2, H, W), channel 0 = x."""

    name = "motion"

    def coarse(self, prev: torch.Tensor, nxt: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def expand(self, coarse: torch.Tensor, size) -> torch.Tensor:
        return coarse

    def __call__(self, prev: torch.Tensor, nxt: torch.Tensor) -> torch.Tensor:
        check_frames(prev, "prev")
        check_frames(nxt, "nxt")
        if prev.shape != nxt.shape:
            raise ValueError(f"prev {tuple(prev.shape)} and nxt {tuple(nxt.shape)} differ")
        return self.expand(self.coarse(prev, nxt), prev.shape[-2:])


class LabelProvider(Provider):
    """Per-frame label maps, (N, channels, H, W)."""

    name = "labels"
    channels = 0
    uses_background = False  # True: the result depends on the background image too

    def coarse(self, frames: torch.Tensor, background: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def expand(self, coarse: torch.Tensor, size) -> torch.Tensor:
        return coarse

    def __call__(self, frames: torch.Tensor, background: torch.Tensor | None = None) -> torch.Tensor:
        check_frames(frames, "frames")
        return self.expand(self.coarse(frames, background), frames.shape[-2:])
