"""Scoring: per-frame score streams of a whole video, each frame's features computed once.

For a video of T frames the generator predicts frames 4..T-1 (0-based) from the 4 before.
Each frame's labels and each consecutive pair's flow are computed exactly once
(FeatureExtractor.video_inputs), then clips are assembled by indexing those caches and run
through the generator (and destroyer) in batches.

On CPU the networks run as inference copies (mama.models.inference: BatchNorm folded,
channels_last, Winograd 3x3 convolutions) made once when the Scorer is built, so the models
passed in are never modified (copies passed in are used as they are); `optimize=False` runs
the models as they are (`True` forces copies).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from mama.models.inference import copies_pay, prepare_extractor, prepare_for_inference
from mama.train.losses import TRIPLET_MARGIN, bottleneck_sims, frame_sse

CLIP_INPUTS = 4  # frames in, the fifth is predicted


@dataclass
class Scorer:
    generator: nn.Module
    extractor: object  # mama.models.providers.FeatureExtractor
    destroyer: nn.Module | None = None
    device: torch.device = torch.device("cpu")
    batch_size: int = 16
    margin: float = TRIPLET_MARGIN
    amp: bool = False  # bf16 autocast (CUDA)
    optimize: bool | None = None  # inference copies (module docstring); None: on CPU only

    def __post_init__(self) -> None:
        self.device = torch.device(self.device)
        if self.optimize is None:
            self.optimize = copies_pay(self.device)
        if self.optimize:
            self.generator = prepare_for_inference(self.generator, self.device)
            if self.destroyer is not None:
                self.destroyer = prepare_for_inference(self.destroyer, self.device)
            self.extractor = prepare_extractor(self.extractor, self.device)

    @torch.inference_mode()
    def video_streams(self, frames: np.ndarray | torch.Tensor, background=None) -> dict[str, np.ndarray]:
        """Streams (sim_motion, sim_label, sse[, destroyer_sse]) for targets 4..T-1 of one video."""
        frames = torch.as_tensor(frames, dtype=torch.float32)
        if frames.shape[0] <= CLIP_INPUTS:
            raise ValueError(f"a video needs more than {CLIP_INPUTS} frames to be scored, got {frames.shape[0]}")
        frames = frames.to(self.device)
        bg = None if background is None else torch.as_tensor(background, dtype=torch.float32).to(self.device)
        return self.cache_streams(self.extractor.video_inputs(frames, bg))

    @torch.inference_mode()
    def cache_streams(self, cache) -> dict[str, np.ndarray]:
        """Streams for targets 4..T-1 of a video whose features are already computed
        (a FeatureExtractor.video_inputs cache): only the networks run."""
        out: dict[str, list[np.ndarray]] = {}
        targets = torch.arange(CLIP_INPUTS, cache.frames.shape[0], device=self.device)
        for chunk in targets.split(self.batch_size):
            streams = self.clip_streams(*self.extractor.clips_from_video(cache, chunk))
            for k, v in streams.items():
                out.setdefault(k, []).append(v)
        return {k: np.concatenate(v) for k, v in out.items()}

    def clip_streams(self, x, flows, labels, target) -> dict[str, np.ndarray]:
        """Streams for a batch of assembled clips."""
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            g = self.generator(x, flows, labels)
            pred = g.pred.float()
            streams = {"sse": frame_sse(pred, target)}
            sim_m, sim_l = bottleneck_sims(g, self.margin)
            streams["sim_motion"] = sim_m
            if sim_l is not None:
                streams["sim_label"] = sim_l
            if self.destroyer is not None:
                destroyed = self.destroyer(pred).float()
                streams["destroyer_sse"] = frame_sse(destroyed, target)
        return {k: v.float().cpu().numpy() for k, v in streams.items()}

    @torch.inference_mode()
    def destroyed(self, x, flows, labels) -> tuple[torch.Tensor, torch.Tensor]:
        """(prediction, destroyer output) for a batch of clips, e.g. to draw damaged regions."""
        pred = self.generator(x, flows, labels).pred
        return pred, (self.destroyer(pred) if self.destroyer is not None else pred)

    @torch.inference_mode()
    def video_maps(self, frames, background=None) -> tuple[np.ndarray, np.ndarray]:
        """Per-pixel maps for targets 4..T-1 of one video, each (T-4, H, W) float32: the
        generator's error |prediction - frame| and the destroyer's damage |destroyed - prediction|
        (each the max over channels, in [-1, 1] units)."""
        frames = torch.as_tensor(frames, dtype=torch.float32).to(self.device)
        bg = None if background is None else torch.as_tensor(background, dtype=torch.float32).to(self.device)
        cache = self.extractor.video_inputs(frames, bg)
        errors, damages = [], []
        for chunk in torch.arange(CLIP_INPUTS, frames.shape[0], device=self.device).split(self.batch_size):
            x, flows, labels, target = self.extractor.clips_from_video(cache, chunk)
            pred, destroyed = self.destroyed(x, flows, labels)
            errors.append(pixel_difference(pred, target))
            damages.append(pixel_difference(destroyed, pred))
        return np.concatenate(errors), np.concatenate(damages)


def pixel_difference(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) x2 -> (B, H, W): max over channels of |a - b|; the destroyer's damage map
    when a is its output and b the prediction it was given."""
    return (a.float() - b.float()).abs().amax(dim=1).cpu().numpy()


def needs_background(extractor) -> bool:
    """Whether the extractor's label provider needs each video's background image."""
    return extractor.labels is not None and extractor.labels.uses_background
