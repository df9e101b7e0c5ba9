"""Motion and label providers, and the de-duplicating feature extractor that feeds F2LM.

Frames are always (N, 3, H, W) float32 BGR in [-1, 1] (DESIGN §5).

Motion providers: `provider(prev, nxt) -> (N, 2, H, W)` flow from `prev` to `nxt` in
pixels, channel 0 = x, 1 = y.
    flownet2sd, flownet2   the FlowNet2 family (weights needed, mama.models.flownet2)
    dis, farneback         OpenCV, weight-free, on the CPU on grayscale uint8 frames
Label providers: `provider(frames, background=None) -> (N, provider.channels, H, W)`.
    deeplabv3              raw DeepLabv3-ResNet101 logits, 21 channels (weights needed)
    foreground             soft foreground map in [0, 1] against the video's background, 1 channel
    none                   0 channels

Every provider splits its work at its exact cache point: `coarse(...)` computes what is
worth keeping (DeepLab's stride-8 logits, FlowNet2-SD's flow before its x4 upsampling, the
full map for the others) and `expand(coarse, size)` finishes it deterministically.
`FeatureExtractor` computes each distinct frame's labels and each distinct frame pair's
flow once, in one batched call per network, and applies the flow scaling the generator
consumes (`flow_scale`, the reference's 1/255) in this one place.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import NamedTuple

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from mama.errors import MamaError

MOTION_PROVIDERS = ("flownet2sd", "flownet2", "dis", "farneback")
LABEL_PROVIDERS = ("deeplabv3", "foreground", "none")
CLIP_LEN = 5  # 4 input frames + the target


# ---------------------------------------------------------------------------------------
# Base classes
# ---------------------------------------------------------------------------------------
class MotionProvider:
    """Flow from prev to nxt in pixels, (N, 2, H, W), channel 0 = x."""

    name = "motion"

    def coarse(self, prev: torch.Tensor, nxt: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def expand(self, coarse: torch.Tensor, size) -> torch.Tensor:
        return coarse

    def __call__(self, prev: torch.Tensor, nxt: torch.Tensor) -> torch.Tensor:
        _check_frames(prev, "prev")
        _check_frames(nxt, "nxt")
        if prev.shape != nxt.shape:
            raise ValueError(f"prev {tuple(prev.shape)} and nxt {tuple(nxt.shape)} differ")
        return self.expand(self.coarse(prev, nxt), prev.shape[-2:])


class LabelProvider:
    """Per-frame label maps, (N, channels, H, W)."""

    name = "labels"
    channels = 0
    uses_background = False  # True: the result depends on the background image too

    def coarse(self, frames: torch.Tensor, background: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def expand(self, coarse: torch.Tensor, size) -> torch.Tensor:
        return coarse

    def __call__(self, frames: torch.Tensor, background: torch.Tensor | None = None) -> torch.Tensor:
        _check_frames(frames, "frames")
        return self.expand(self.coarse(frames, background), frames.shape[-2:])


def _check_frames(frames: torch.Tensor, what: str) -> None:
    if frames.dim() != 4 or frames.shape[1] != 3:
        raise ValueError(f"{what} must be (N, 3, H, W) BGR frames, got {tuple(frames.shape)}")


# ---------------------------------------------------------------------------------------
# OpenCV motion (weight-free, CPU)
# ---------------------------------------------------------------------------------------
def to_gray_uint8(frames: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) BGR [-1, 1] -> (N, H, W) uint8 grayscale (ITU-R 601 luma, as cv2)."""
    bgr = (frames.detach().float().clamp(-1, 1) + 1) * 127.5
    luma = 0.114 * bgr[:, 0] + 0.587 * bgr[:, 1] + 0.299 * bgr[:, 2]
    return luma.round().to(torch.uint8).cpu().numpy()


class OpenCVFlow(MotionProvider):
    """Dense flow per frame pair with an OpenCV method, pairs spread over a thread pool
    (OpenCV releases the GIL, so threads run the pairs in parallel)."""

    def __init__(self, workers: int | None = None):
        self.workers = workers or min(8, os.cpu_count() or 1)
        self._local = threading.local()

    def pair_flow(self, prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        """(H, W) uint8 x2 -> (H, W, 2) float32 flow in pixels."""
        raise NotImplementedError

    def coarse(self, prev: torch.Tensor, nxt: torch.Tensor) -> torch.Tensor:
        a, b = to_gray_uint8(prev), to_gray_uint8(nxt)
        if len(a) > 1 and self.workers > 1:
            with ThreadPoolExecutor(min(self.workers, len(a))) as pool:
                flows = list(pool.map(self.pair_flow, a, b))
        else:
            flows = [self.pair_flow(x, y) for x, y in zip(a, b)]
        flow = torch.from_numpy(np.stack(flows)).permute(0, 3, 1, 2).contiguous()
        return flow.to(prev.device)


class DISFlow(OpenCVFlow):
    """cv2.DISOpticalFlow (Kroeger et al. 2016), PRESET_MEDIUM by default."""

    name = "dis"

    def __init__(self, preset: int = cv2.DISOPTICAL_FLOW_PRESET_MEDIUM, workers: int | None = None):
        super().__init__(workers)
        self.preset = preset

    def pair_flow(self, prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        dis = getattr(self._local, "dis", None)
        if dis is None:  # a DIS object keeps state between calls: one per thread
            dis = self._local.dis = cv2.DISOpticalFlow_create(self.preset)
        return dis.calc(prev, nxt, None)


class FarnebackFlow(OpenCVFlow):
    """cv2.calcOpticalFlowFarneback (polynomial expansion), a 3-level pyramid."""

    name = "farneback"

    def __init__(self, levels: int = 3, winsize: int = 15, iterations: int = 3, workers: int | None = None):
        super().__init__(workers)
        self.levels, self.winsize, self.iterations = levels, winsize, iterations

    def pair_flow(self, prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        return cv2.calcOpticalFlowFarneback(prev, nxt, None, pyr_scale=0.5, levels=self.levels,
                                            winsize=self.winsize, iterations=self.iterations,
                                            poly_n=5, poly_sigma=1.1, flags=0)


# ---------------------------------------------------------------------------------------
# FlowNet2 motion (weights needed)
# ---------------------------------------------------------------------------------------
class FlowNetFlow(MotionProvider):
    """A FlowNet2-family network (mama.models.flownet2) fed as the reference feeds FlowNet2-SD:
    the [-1, 1] pair times 255 (DESIGN §5). Its output is flow in pixels; the reference's
    division by 255 is the extractor's `flow_scale`. FlowNet2-SD is cached before its x4
    upsampling; full FlowNet2 (several stages, no single low-res output) at full size."""

    def __init__(self, name: str, net: torch.nn.Module):
        self.name = name
        self.net = net
        self.lowres = name == "flownet2sd"

    @torch.no_grad()
    def coarse(self, prev: torch.Tensor, nxt: torch.Tensor) -> torch.Tensor:
        from mama.models import flownet2

        if self.lowres:
            return flownet2.flownet2sd_reference_lowres(self.net, prev, nxt)
        return self.net(flownet2.reference_pair(prev, nxt))

    def expand(self, coarse: torch.Tensor, size) -> torch.Tensor:
        from mama.models import flownet2

        return flownet2.upsample_flow(coarse, "bilinear") if self.lowres else coarse


# ---------------------------------------------------------------------------------------
# Labels
# ---------------------------------------------------------------------------------------
class DeepLabLabels(LabelProvider):
    """Raw DeepLabv3-ResNet101 logits (21 channels) of the BGR [-1, 1] frames, as the
    reference; cached at stride 8."""

    name = "deeplabv3"
    channels = 21

    def __init__(self, model: torch.nn.Module):
        self.model = model

    @torch.no_grad()
    def coarse(self, frames, background=None):
        return self.model.stride8_logits(frames)

    def expand(self, coarse, size):
        from mama.models.deeplab import upsample_logits

        return upsample_logits(coarse, size)


class ForegroundLabels(LabelProvider):
    """A soft foreground map in [0, 1] for a fixed camera: the max-over-channels absolute
    difference to the video's background image, lightly blurred, through a smooth ramp
    from `low` (0) to `high` (1) (in [-1, 1] units: 0.08 ~ 10 and 0.25 ~ 32 grey levels)."""

    name = "foreground"
    channels = 1
    uses_background = True

    def __init__(self, low: float = 0.08, high: float = 0.25, sigma: float = 1.0):
        if not 0 <= low < high:
            raise ValueError(f"need 0 <= low < high, got {low}, {high}")
        self.low, self.high = low, high
        radius = max(1, round(2 * sigma))
        x = torch.arange(-radius, radius + 1, dtype=torch.float32)
        g = torch.exp(-(x**2) / (2 * sigma**2))
        self.kernel = g / g.sum()  # separable Gaussian

    def coarse(self, frames, background=None):
        if background is None:
            raise ValueError("foreground labels need the video's background image "
                             "(mama.data.datasets.video_background)")
        if background.dim() == 3:
            background = background.unsqueeze(0)
        diff = (frames - background.to(frames)).abs().amax(dim=1, keepdim=True)
        k = self.kernel.to(frames)
        pad = len(k) // 2
        diff = F.conv2d(F.pad(diff, (pad, pad, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
        diff = F.conv2d(F.pad(diff, (0, 0, pad, pad), mode="replicate"), k.view(1, 1, -1, 1))
        t = ((diff - self.low) / (self.high - self.low)).clamp(0, 1)
        return t * t * (3 - 2 * t)  # smoothstep


class NoLabels(LabelProvider):
    name = "none"
    channels = 0

    def coarse(self, frames, background=None):
        return frames.new_zeros(frames.shape[0], 0, *frames.shape[-2:])


# ---------------------------------------------------------------------------------------
# Builders
# ---------------------------------------------------------------------------------------
def build_motion_provider(name: str, device="cpu", weights=None) -> MotionProvider:
    """A motion provider by name; `weights` is a file path for the FlowNet kinds (else the
    weights dir / torch hub cache is searched; a missing file is a MamaError)."""
    if name == "dis":
        return DISFlow()
    if name == "farneback":
        return FarnebackFlow()
    if name in ("flownet2sd", "flownet2"):
        from mama.models.flownet2 import load_flownet
        from mama.weights import resolve_weights

        path = resolve_weights(name, weights)
        return FlowNetFlow(name, load_flownet(name, path, device))
    raise MamaError(f"unknown motion provider {name!r}; choose one of: {', '.join(MOTION_PROVIDERS)}")


def build_label_provider(name: str, device="cpu", weights=None) -> LabelProvider:
    """A label provider by name; `weights` is a file path for deeplabv3 (else the weights dir
    / torch hub cache is searched; a missing file is a MamaError)."""
    if name == "foreground":
        return ForegroundLabels()
    if name == "none":
        return NoLabels()
    if name == "deeplabv3":
        from mama.models.deeplab import build_deeplabv3
        from mama.weights import resolve_weights

        path = resolve_weights("deeplabv3_resnet101", weights)
        return DeepLabLabels(build_deeplabv3(path, device))
    raise MamaError(f"unknown label provider {name!r}; choose one of: {', '.join(LABEL_PROVIDERS)}")


# ---------------------------------------------------------------------------------------
# Feature extraction
# ---------------------------------------------------------------------------------------
class ClipInputs(NamedTuple):
    """The generator's inputs for B clips, channels frame-major (DESIGN §5)."""

    frames: torch.Tensor  # (B, 12, H, W): f1 BGR, f2 BGR, f3 BGR, f4 BGR
    flows: torch.Tensor  # (B, 6, H, W): pairs 1-2, 2-3, 3-4, each (x, y), times flow_scale
    labels: torch.Tensor | None  # (B, 4*C, H, W): f1c0..f1c{C-1}, f2c0, ...; None if C == 0
    target: torch.Tensor  # (B, 3, H, W): frame 5


@dataclass
class VideoCache:
    """One video's exact caches: each frame's labels and each pair's flow, computed once."""

    frames: torch.Tensor  # (T, 3, H, W)
    flows: torch.Tensor  # (T-1, ...) motion.coarse of pairs (t, t+1), unscaled
    labels: torch.Tensor | None  # (T, ...) labels.coarse of each frame; None without labels


def _projection(rows: torch.Tensor) -> torch.Tensor:
    """(N, D) -> (N,): each row against one fixed random direction."""
    probe = torch.randn(rows.shape[1], generator=torch.Generator().manual_seed(0))
    return rows @ probe.to(rows)


def distinct_rows(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact `torch.unique(rows, dim=0, return_inverse=True)` for (N, D) rows, cheaply.

    Rows are grouped by a random projection (one mat-vec instead of a lexicographic sort of
    long rows), then every row is checked equal to its group's representative; a projection
    collision between different rows (or NaNs) falls back to torch.unique.
    """
    if rows.shape[0] <= 1:
        return rows, torch.zeros(rows.shape[0], dtype=torch.long, device=rows.device)
    _, inverse = torch.unique(_projection(rows), return_inverse=True)
    first = torch.arange(rows.shape[0], device=rows.device)
    rep = torch.full((int(inverse.max()) + 1,), rows.shape[0], device=rows.device, dtype=torch.long)
    rep = rep.scatter_reduce(0, inverse, first, reduce="amin")  # first row of each group
    dup = (rep[inverse] != first).nonzero().squeeze(1)  # rows claimed equal to an earlier one
    if torch.equal(rows[dup], rows[rep[inverse[dup]]]):
        return rows[rep], inverse
    return torch.unique(rows, dim=0, return_inverse=True)


class FeatureExtractor:
    """Turns frames into the generator's inputs, computing each distinct frame's labels and
    each distinct pair's flow exactly once."""

    def __init__(self, motion: MotionProvider, labels: LabelProvider | None, flow_scale: float = 1 / 255,
                 chunk: int = 32):
        self.motion = motion
        self.labels = labels if labels is not None and labels.channels > 0 else None
        self.flow_scale = flow_scale
        self.chunk = chunk  # frames (pairs) per provider call in `video_inputs`

    def _scaled(self, flow_coarse: torch.Tensor, size) -> torch.Tensor:
        return self.motion.expand(flow_coarse, size) * self.flow_scale  # the one place flow is scaled

    def clip_inputs(self, clips: torch.Tensor, background: torch.Tensor | None = None) -> ClipInputs:
        """(B, 5, 3, H, W) clips (+ (B, 3, H, W) backgrounds) -> ClipInputs.

        Identical frames (overlapping clips) and identical pairs are found by value and
        computed once: one motion call for all distinct pairs, one label call for all
        distinct (frame, background) combinations.
        """
        if clips.dim() != 5 or clips.shape[1] != CLIP_LEN or clips.shape[2] != 3:
            raise ValueError(f"clips must be (B, {CLIP_LEN}, 3, H, W), got {tuple(clips.shape)}")
        b, _, _, h, w = clips.shape
        inputs = clips[:, : CLIP_LEN - 1]
        uniq, frame_id = distinct_rows(inputs.reshape(b * (CLIP_LEN - 1), -1))
        distinct = uniq.view(-1, 3, h, w)
        frame_id = frame_id.view(b, CLIP_LEN - 1)

        pairs = torch.stack([frame_id[:, :-1], frame_id[:, 1:]], dim=-1).reshape(-1, 2)
        pairs, pair_id = torch.unique(pairs, dim=0, return_inverse=True)
        flow = self._scaled(self.motion.coarse(distinct[pairs[:, 0]], distinct[pairs[:, 1]]), (h, w))
        flows = flow[pair_id].view(b, -1, h, w)

        labels = None
        if self.labels is not None:
            if self.labels.uses_background:
                if background is None:
                    raise ValueError(f"label provider {self.labels.name!r} needs the clips' backgrounds")
                bg_uniq, bg_id = distinct_rows(background.reshape(b, -1))
                keys = torch.stack([frame_id, bg_id[:, None].expand_as(frame_id)], dim=-1).reshape(-1, 2)
                keys, key_id = torch.unique(keys, dim=0, return_inverse=True)
                coarse = self.labels.coarse(distinct[keys[:, 0]], bg_uniq.view(-1, 3, h, w)[keys[:, 1]])
            else:
                key_id = frame_id.reshape(-1)
                coarse = self.labels.coarse(distinct)
            labels = self.labels.expand(coarse, (h, w))[key_id].view(b, -1, h, w)

        return ClipInputs(inputs.reshape(b, -1, h, w), flows, labels, clips[:, -1])

    def video_inputs(self, frames: torch.Tensor, background: torch.Tensor | None = None) -> VideoCache:
        """(T, 3, H, W) frames of one video -> its caches: labels of every frame (T) and flow of
        every consecutive pair (T-1), each computed once, `chunk` at a time."""
        _check_frames(frames, "frames")
        t = frames.shape[0]
        if t < CLIP_LEN:
            raise ValueError(f"a video needs at least {CLIP_LEN} frames, got {t}")
        step = self.chunk
        starts = range(0, t - 1, step)  # pair i is (frame i, frame i + 1), i < T - 1
        ends = [min(i + step, t - 1) for i in starts]
        flows = torch.cat([self.motion.coarse(frames[i:e], frames[i + 1 : e + 1]) for i, e in zip(starts, ends)])
        labels = None
        if self.labels is not None:
            if self.labels.uses_background and background is None:
                raise ValueError(f"label provider {self.labels.name!r} needs the video's background")
            parts = []
            for i in range(0, t, step):
                chunk = frames[i : i + step]
                bg = None if background is None else background.reshape(1, 3, *frames.shape[-2:]).expand_as(chunk)
                parts.append(self.labels.coarse(chunk, bg))
            labels = torch.cat(parts)
        return VideoCache(frames, flows, labels)

    def clips_from_video(self, cache: VideoCache, targets) -> ClipInputs:
        """ClipInputs for target frames `targets` (each in 4..T-1) by indexing `cache`: the
        clip of target t is frames t-4..t; nothing is recomputed."""
        targets = torch.as_tensor(targets, dtype=torch.long, device=cache.frames.device).reshape(-1)
        t_len = cache.frames.shape[0]
        if targets.numel() and (targets.min() < CLIP_LEN - 1 or targets.max() >= t_len):
            raise ValueError(f"targets must be in {CLIP_LEN - 1}..{t_len - 1}, got {targets.tolist()}")
        h, w = cache.frames.shape[-2:]
        b = targets.numel()
        offsets = torch.arange(-(CLIP_LEN - 1), 0, device=targets.device)  # -4..-1
        frame_idx = targets[:, None] + offsets  # (B, 4) input frames
        frames = cache.frames[frame_idx].reshape(b, -1, h, w)
        flows = self._scaled(cache.flows[frame_idx[:, :-1].reshape(-1)], (h, w)).reshape(b, -1, h, w)
        labels = None
        if self.labels is not None:
            labels = self.labels.expand(cache.labels[frame_idx.reshape(-1)], (h, w)).reshape(b, -1, h, w)
        return ClipInputs(frames, flows, labels, cache.frames[targets])
