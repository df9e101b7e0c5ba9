"""Scoring: per-frame score streams of a whole video, each frame's features computed once.

For a video of T frames the generator predicts frames 4..T-1 (0-based) from the 4 before.
Each frame's labels and each consecutive pair's flow are computed exactly once (a
FeatureStore filled with the video), then clips are assembled from the store and run through
the generator (and destroyer) in batches.

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

from mama.features.clips import INPUT_FRAMES
from mama.features.extractor import FeatureExtractor
from mama.features.store import FeatureStore
from mama.models.inference import copies_pay, prepare_for_inference
from mama.models.scores import TRIPLET_MARGIN, bottleneck_sims, frame_sse


@dataclass
class Scorer:
    generator: nn.Module
    extractor: FeatureExtractor
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
            self.extractor = self.extractor.inference_copy(self.device)

    def _video(self, frames, background) -> tuple[torch.Tensor, FeatureStore]:
        """The frames on the device and a store filled with their features (video 0)."""
        frames = torch.as_tensor(frames, dtype=torch.float32)
        if frames.shape[0] <= INPUT_FRAMES:
            raise ValueError(f"a video needs more than {INPUT_FRAMES} frames to be scored, got {frames.shape[0]}")
        frames = frames.to(self.device)
        bg = None if background is None else torch.as_tensor(background, dtype=torch.float32).to(self.device)
        store = FeatureStore(self.extractor, device=self.device)
        store.fill_video(0, frames, bg)
        return frames, store

    def _targets(self, frames: torch.Tensor):
        return torch.arange(INPUT_FRAMES, frames.shape[0], device=self.device).split(self.batch_size)

    @torch.inference_mode()
    def video_streams(self, frames: np.ndarray | torch.Tensor, background=None) -> dict[str, np.ndarray]:
        """Streams (sim_motion, sim_label, sse[, destroyer_sse]) for targets 4..T-1 of one video."""
        frames, store = self._video(frames, background)
        return self.stored_streams(store, 0, frames)

    @torch.inference_mode()
    def stored_streams(self, store: FeatureStore, video: int, frames: torch.Tensor) -> dict[str, np.ndarray]:
        """Streams for targets 4..T-1 of a video whose features `store` holds: only the networks run."""
        out: dict[str, list[np.ndarray]] = {}
        for chunk in self._targets(frames):
            for k, v in self.clip_streams(*store.video_clip_inputs(video, frames, chunk)).items():
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
    def video_maps(self, frames, background=None):
        """Per-pixel maps, batch by batch, for targets 4..T-1 of one video: yields (targets,
        error, damage), error = the generator's |prediction - frame| and damage = the destroyer's
        |destroyed - prediction|, each (B, H, W) float32 (max over channels, [-1, 1] units)."""
        frames, store = self._video(frames, background)
        for chunk in self._targets(frames):
            x, flows, labels, target = store.video_clip_inputs(0, frames, chunk)
            pred, destroyed = self.destroyed(x, flows, labels)
            yield chunk.tolist(), pixel_difference(pred, target), pixel_difference(destroyed, pred)


def pixel_difference(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) x2 -> (B, H, W): max over channels of |a - b|; the destroyer's damage map
    when a is its output and b the prediction it was given."""
    return (a.float() - b.float()).abs().amax(dim=1).cpu().numpy()
