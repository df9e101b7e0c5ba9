"""One setup factory for every end-to-end measurement (bench_pipeline.py, scaling.py,
gpu_e2e.sh) and for the equivalence tests: the same models, weights and inputs for mama's
pipeline ("ours") and the reference algorithm ("baseline", benchmarks/reference_pipeline.py).

Providers:
  light  DIS flow + foreground labels (weight-free)
  paper  FlowNet2-SD + DeepLabv3-ResNet101, random weights (the architectures, not the weights)
Inputs are synthetic moving frames (seeded), so nothing depends on a dataset on disk.

Ours trains through mama.train.trainer's stages, built by their own constructor from these
parts, with the exact feature store in memory (mama.features.store, `TrainConfig.feature_store`)
or, with `cache=False`, keeping nothing between steps.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field

import numpy as np
import torch

from mama.config import TrainConfig
from mama.evaluate.engine import Scorer
from mama.features.clips import CLIP_LEN
from mama.features.extractor import FeatureExtractor
from mama.features.labels import DeepLabLabels, ForegroundLabels
from mama.features.motion import DISFlow, FlowNetFlow
from mama.features.store import TensorSource
from mama.models.destroyer import Destroyer
from mama.models.discriminator import PatchDiscriminator
from mama.models.generator import F2LMGenerator
from mama.train.trainer import DestroyerParts, DestroyerTrainer, GeneratorParts, GeneratorTrainer

from benchmarks.reference_pipeline import ReferencePipeline

PROVIDERS = ("light", "paper")


def build_extractor(providers: str, device) -> FeatureExtractor:
    if providers == "light":
        return FeatureExtractor(DISFlow(), ForegroundLabels())
    if providers == "paper":
        from mama.models.deeplab import DeepLabV3Logits
        from mama.models.flownet2 import FlowNet2SD

        flownet = FlowNet2SD().to(device).eval().requires_grad_(False)
        deeplab = DeepLabV3Logits().to(device).eval().requires_grad_(False)
        return FeatureExtractor(FlowNetFlow("flownet2sd", flownet), DeepLabLabels(deeplab))
    raise ValueError(f"providers must be one of {PROVIDERS}, got {providers!r}")


def synthetic_video(frames: int, size: int, seed: int) -> torch.Tensor:
    """(T, 3, S, S) BGR [-1, 1]: a textured background with two bright squares moving across."""
    g = torch.Generator().manual_seed(seed)
    bg = torch.nn.functional.interpolate(torch.rand(1, 3, size // 8, size // 8, generator=g) * 1.2 - 0.8,
                                         size=(size, size), mode="bilinear", align_corners=False)[0]
    video = bg.expand(frames, 3, size, size).clone()
    side = max(size // 8, 4)
    for t in range(frames):
        for k, (vx, vy) in enumerate(((2, 1), (-1, 2))):
            x = (size // 4 + k * size // 3 + vx * t) % (size - side)
            y = (size // 3 + vy * t) % (size - side)
            video[t, :, y : y + side, x : x + side] = 0.9 - 0.3 * k
    return video + 0.02 * torch.randn(video.shape, generator=g)


def video_background(video: torch.Tensor) -> torch.Tensor:
    return video.median(dim=0).values


@dataclass
class Workload:
    providers: str
    size: int
    batch: int
    base: int
    device: torch.device
    extractor: FeatureExtractor
    batch_items: dict  # collated ClipDataset-like items: clip, video, target (+ background for the baseline)
    train_source: TensorSource  # the training videos the batch's clips come from
    video: torch.Tensor  # (T, 3, S, S) one test video
    background: torch.Tensor | None
    seed: int
    run_dir: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="mama-bench-"))

    @property
    def label_channels(self) -> int:
        return 4 * (self.extractor.labels.channels if self.extractor.labels is not None else 0)

    def config(self, stage: str, cache: bool = True) -> TrainConfig:
        return TrainConfig(stage=stage, dataset="ped2", data_root=self.run_dir, out=f"{self.run_dir}/{stage}",
                           size=self.size, base=self.base, batch_size=self.batch, iters=1, device=self.device.type,
                           seed=self.seed, num_workers=0, compile=False, amp=False,
                           feature_store="memory" if cache else "off")

    # ------------------------------------------------------------------ models
    def generator(self) -> F2LMGenerator:
        torch.manual_seed(self.seed)
        return F2LMGenerator(label_channels=self.label_channels, base=self.base).to(self.device)

    def discriminator(self) -> PatchDiscriminator:
        torch.manual_seed(self.seed + 1)
        return PatchDiscriminator().to(self.device)

    def destroyer(self) -> Destroyer:
        torch.manual_seed(self.seed + 2)
        return Destroyer(base=self.base).to(self.device)

    # ------------------------------------------------------------------ ours
    def generator_trainer(self, cache: bool = True) -> GeneratorTrainer:
        t = GeneratorTrainer(self.config("generator", cache),
                             GeneratorParts(self.extractor, self.generator(), self.discriminator(), meta={}), self.train_source)
        t.wrap_networks()
        return t

    def destroyer_trainer(self, net_g: F2LMGenerator, cache: bool = True) -> DestroyerTrainer:
        t = DestroyerTrainer(self.config("destroyer", cache), DestroyerParts(self.extractor, net_g, self.destroyer(), meta={}),
                             self.train_source)
        t.wrap_networks()
        return t

    def scorer(self, net_g, net_a=None, optimize: bool | None = None) -> Scorer:
        return Scorer(net_g.eval(), self.extractor, None if net_a is None else net_a.eval(), self.device,
                      optimize=optimize)

    # ------------------------------------------------------------------ baseline
    def reference(self) -> ReferencePipeline:
        return ReferencePipeline(self.extractor)


def make_workload(providers: str = "light", size: int = 128, batch: int = 4, base: int = 64, frames: int = 40,
                  device: str | torch.device = "cpu", seed: int = 0) -> Workload:
    """A batch of `batch` clips from 2 training videos and one test video of `frames` frames."""
    device = torch.device(device)
    extractor = build_extractor(providers, device)
    train_videos = [synthetic_video(CLIP_LEN + batch, size, seed + 10 + v) for v in range(2)]
    # Clips at scattered targets, as a shuffled sampler draws them (little overlap).
    rng = np.random.default_rng(seed)
    videos = rng.integers(0, 2, batch)
    targets = rng.integers(CLIP_LEN - 1, CLIP_LEN + batch, batch)
    clips = torch.stack([train_videos[v][t - CLIP_LEN + 1 : t + 1] for v, t in zip(videos, targets)])
    items = {"clip": clips.to(device), "video": torch.as_tensor(videos), "target": torch.as_tensor(targets)}
    needs_bg = extractor.labels is not None and extractor.labels.uses_background
    if needs_bg:
        items["background"] = torch.stack([video_background(train_videos[v]) for v in videos]).to(device)
    video = synthetic_video(frames, size, seed + 100).to(device)
    source = TensorSource({v: train_videos[v].to(device) for v in range(2)},
                          {v: video_background(train_videos[v]).to(device) if needs_bg else None for v in range(2)})
    return Workload(providers, size, batch, base, device, extractor, items, source, video,
                    video_background(video) if needs_bg else None, seed)
