"""The feature extractor: a motion and a label provider, and the one place where their
coarse outputs become the generator's inputs (`assemble`: expand to the frame size, scale the
flow by the reference's 1/255, lay the channels out frame-major)."""
from __future__ import annotations

import copy

import torch

from mama.features.base import LabelProvider, MotionProvider
from mama.features.clips import INPUT_FRAMES, ClipInputs
from mama.models.inference import prepare_for_inference


class FeatureExtractor:
    """Motion + labels for the generator. What to compute once and keep is mama.features.store's."""

    is_inference_copy = False  # True on what inference_copy returns: its networks are prepared already

    def __init__(self, motion: MotionProvider, labels: LabelProvider | None, flow_scale: float = 1 / 255,
                 chunk: int = 32):
        self.motion = motion
        self.labels = labels if labels is not None and labels.channels > 0 else None
        self.flow_scale = flow_scale  # the one place flow is scaled
        self.chunk = chunk  # frames (pairs) per provider call when a whole video is computed

    @property
    def weights_id(self) -> dict | None:
        """What the providers' outputs depend on besides the frames (their names and weight files),
        or None when a provider's weights cannot be named (then nothing is kept on disk)."""
        ids = {role: p.weights_id for role, p in (("motion", self.motion), ("labels", self.labels))
               if p is not None}
        if any(v is None for v in ids.values()):
            return None
        return {"motion": self.motion.name, "labels": self.labels.name if self.labels is not None else "none",
                "flow_scale": self.flow_scale, **{f"{k}_weights": v for k, v in ids.items()}}

    @property
    def needs_background(self) -> bool:
        """Whether the label provider needs each video's background image."""
        return self.labels is not None and self.labels.uses_background

    def coarse_flows(self, prev: torch.Tensor, nxt: torch.Tensor) -> torch.Tensor:
        """Coarse flow of the pairs prev[i] -> nxt[i] (one batched provider call)."""
        return self.motion.coarse(prev, nxt)

    def coarse_labels(self, frames: torch.Tensor, background: torch.Tensor | None = None) -> torch.Tensor:
        """Coarse labels of `frames` (one batched provider call); background (N, 3, H, W) or (3, H, W)."""
        if self.labels.uses_background and background is None:
            raise ValueError(f"label provider {self.labels.name!r} needs the clips' backgrounds")
        return self.labels.coarse(frames, background)

    def assemble(self, inputs: torch.Tensor, target: torch.Tensor, flows: torch.Tensor,
                 labels: torch.Tensor | None) -> ClipInputs:
        """ClipInputs of B clips from their frames and coarse features.

        inputs (B, 4, 3, H, W) the input frames, target (B, 3, H, W); flows (B*3, ...) the coarse
        flow of pairs 1-2, 2-3, 3-4 of each clip in turn; labels (B*4, ...) the coarse labels of
        frames 1..4 of each clip in turn (None without labels).
        """
        b, _, _, h, w = inputs.shape
        flow = (self.motion.expand(flows, (h, w)) * self.flow_scale).reshape(b, -1, h, w)
        label = None
        if self.labels is not None:
            label = self.labels.expand(labels, (h, w)).reshape(b, -1, h, w)
        return ClipInputs(inputs.reshape(b, INPUT_FRAMES * 3, h, w), flow, label, target)

    def inference_copy(self, device: torch.device | str | None = None, winograd: bool | None = None) -> "FeatureExtractor":
        """A copy whose providers run `prepare_for_inference` copies of their networks (FlowNet,
        DeepLab); weight-free providers are shared as they are. Preparing DeepLabv3 + FlowNet2-SD
        takes seconds, so a copy is returned as it is (a trainer prepares its extractor once)."""
        if self.is_inference_copy:
            return self
        prepared = copy.copy(self)
        for role in ("motion", "labels"):
            provider = getattr(self, role)
            if provider is not None and provider.networks:
                setattr(prepared, role, provider.with_networks(
                    {name: prepare_for_inference(net, device, winograd) for name, net in provider.networks.items()}))
        prepared.is_inference_copy = True
        return prepared
