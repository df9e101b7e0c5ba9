"""Choosing a checkpoint without test labels: pseudo-anomalies made from normal training video.

The reference code keeps the checkpoint with the best TEST AUC. Without test labels we ask
the same question of anomalies we can make ourselves: how well does the model's fused score
separate normal training clips from pseudo-anomalous clips made from the same videos?

  skip    the clip's frames are `SKIP_STRIDE` apart, so everything moves 3x faster (the usual
          pseudo-anomaly of frame-prediction detectors);
  patch   a foreign object: a patch of another training frame, its colours inverted, pasted
          into the clip and moving across it faster than people walk.

The generator stage is scored on skip clips, the destroyer stage on skip and patch clips: the
destroyer earns its keep when it makes them MORE anomalous than the generator alone does (a
destroyer that changes nothing is not rewarded, as held-out PSNR would reward it). Streams
are fused as in the online protocol: z-scores from the normal clips' statistics, the default
weights; the figure is the AUC of normal vs pseudo-anomalous clips. No test video is read.
The set is fixed per run and its features are computed once; a validation runs the networks.

`test_set_auc` is `--select-on-test` only: the reference's choice, the best AUC over its
weight grid on the TEST labels.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mama import metrics
from mama.data.datasets import VideoRecord, make_samples, read_background, read_video_frames
from mama.evaluate.calibrate import effective_weights
from mama.evaluate.engine import Scorer
from mama.evaluate.fusion import DEFAULT_WEIGHTS, FusionWeights, StreamStats, fuse_online, search_weights
from mama.errors import MamaError
from mama.evaluate.streams import video_streams
from mama.features.clips import INPUT_FRAMES
from mama.features.extractor import FeatureExtractor
from mama.features.store import FeatureStore

SKIP_STRIDE = 3  # frames apart in a skip clip
PATCH_FRACTION = 4  # a pasted patch is size // 4 wide (64 px at 256)
PATCH_SPEED = 1 / 32  # of the frame size per frame: 8 px at 256, several times walking speed
WINDOW_VIDEOS = 4  # the set is drawn from at most this many videos, evenly spaced
GENERATOR_KINDS = ("skip",)
DESTROYER_KINDS = ("skip", "patch")


@dataclass
class Window:
    """Consecutive frames of one kind ("normal" or a pseudo-anomaly): video `index` of the store."""

    kind: str
    index: int
    frames: torch.Tensor  # (T, 3, S, S) on the device


def _paste_moving_patch(frames: np.ndarray, patch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """`frames` (L, 3, S, S) with `patch` (3, P, P) pasted on a straight path across them."""
    length, _, size, _ = frames.shape
    p = patch.shape[-1]
    angle = rng.uniform(0, 2 * math.pi)
    velocity = PATCH_SPEED * size * np.array([math.cos(angle), math.sin(angle)])
    centre = rng.uniform(0, size - p, 2)
    out = frames.copy()
    for t in range(length):
        x, y = np.clip(np.round(centre + velocity * (t - (length - 1) / 2)), 0, size - p).astype(int)
        out[t, :, y : y + p, x : x + p] = patch
    return out


def _picks(videos: list[VideoRecord]) -> np.ndarray:
    """The videos the set is drawn from: at most WINDOW_VIDEOS, evenly spaced."""
    return np.unique(np.linspace(0, len(videos) - 1, min(len(videos), WINDOW_VIDEOS)).round().astype(int))


def check_pseudo_anomalies(videos: list[VideoRecord], kinds: tuple[str, ...]) -> None:
    """The videos can give a pseudo-anomalous clip of one of `kinds` (a "patch" clip always can; a
    "skip" clip needs INPUT_FRAMES * SKIP_STRIDE + 1 frames); checked before training, not at the
    first validation an hour in."""
    need = INPUT_FRAMES * SKIP_STRIDE + 1
    if "patch" in kinds or any(videos[i].num_frames >= need for i in _picks(videos)):
        return
    names = ", ".join(videos[i].name for i in _picks(videos))
    raise MamaError(f"the validation videos ({names}) are too short for pseudo-anomalous (skip) clips: each has fewer "
                    f"than {need} frames; use longer training videos")


class PseudoAnomalyValidator:
    """A fixed set of normal and pseudo-anomalous training clips, and the AUC between them."""

    def __init__(self, extractor: FeatureExtractor, videos: list[VideoRecord], size: int, clips_per_kind: int,
                 kinds: tuple[str, ...], seed: int, device: torch.device | str = "cpu"):
        if not videos:
            raise ValueError("pseudo-anomaly validation needs at least one training video")
        self.kinds = tuple(kinds)
        check_pseudo_anomalies(videos, self.kinds)
        self.windows: list[Window] = []
        self.store = FeatureStore(extractor, device=device)
        picks = _picks(videos)
        per_video = max(1, math.ceil(clips_per_kind / len(picks)))
        rng = np.random.default_rng([seed, 20260])
        device = torch.device(device)

        def add(kind: str, frames: np.ndarray, background) -> None:
            t = torch.from_numpy(np.ascontiguousarray(frames)).to(device)
            bg = None if background is None else torch.from_numpy(background).to(device)
            with torch.inference_mode():
                self.store.fill_video(len(self.windows), t, bg)
            self.windows.append(Window(kind, len(self.windows), t))

        for n, i in enumerate(picks):
            video = videos[i]
            frames_total = video.num_frames
            bg = None
            if extractor.needs_background:
                bg = read_background(video, (size, size), frames_total)
            clips = min(per_video, frames_total - INPUT_FRAMES)
            start = int(rng.integers(0, frames_total - (clips + INPUT_FRAMES) + 1))
            normal = read_video_frames(video, range(start, start + clips + INPUT_FRAMES), (size, size))
            add("normal", normal, bg)
            if "skip" in self.kinds:
                skip_clips = min(per_video, (frames_total - 1) // SKIP_STRIDE + 1 - INPUT_FRAMES)
                if skip_clips >= 1:
                    span = (skip_clips + INPUT_FRAMES - 1) * SKIP_STRIDE + 1
                    s = int(rng.integers(0, frames_total - span + 1))
                    add("skip", read_video_frames(video, range(s, s + span, SKIP_STRIDE), (size, size)), bg)
            if "patch" in self.kinds:
                donor = videos[picks[(n + 1) % len(picks)]]
                source = read_video_frames(donor, [int(rng.integers(0, donor.num_frames))], (size, size))[0]
                p = max(4, size // PATCH_FRACTION)
                y, x = rng.integers(0, size - p + 1, 2)
                patch = -source[::-1, y : y + p, x : x + p]  # channels reversed, intensity inverted
                add("patch", _paste_moving_patch(normal, patch, rng), bg)
        if not any(w.kind != "normal" for w in self.windows):  # check_pseudo_anomalies said so before
            raise ValueError("the training videos are too short to make pseudo-anomalous clips")

    @property
    def clips(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for w in self.windows:
            out[w.kind] = out.get(w.kind, 0) + w.frames.shape[0] - INPUT_FRAMES
        return out

    def fit_weights(self, scorer: Scorer, with_destroyer: bool) -> tuple[FusionWeights, float]:
        """The reference grid's weights that best separate this set's pseudo-anomalous clips from
        its normal ones (`mama eval --fit-weights`), with the AUC they reach."""
        streams = [scorer.stored_streams(self.store, w.index, w.frames) for w in self.windows]
        joined = {k: np.concatenate([s[k] for s in streams]) for k in streams[0]}
        labels = np.concatenate([np.full(len(s["sse"]), float(w.kind != "normal")) for s, w in zip(streams, self.windows)])
        return search_weights([joined], [labels], with_destroyer and "destroyer_sse" in joined)

    def score(self, scorer: Scorer, weights: FusionWeights = DEFAULT_WEIGHTS) -> dict[str, float]:
        """{"auc": normal vs every pseudo-anomaly, "auc_<kind>": vs each kind}; weights of
        streams the scorer does not produce are zeroed (no destroyer: the generator's fusion)."""
        streams = [scorer.stored_streams(self.store, w.index, w.frames) for w in self.windows]
        stats = StreamStats.from_streams([s for s, w in zip(streams, self.windows) if w.kind == "normal"])
        w = effective_weights(weights, streams[0])
        fused = [fuse_online(s, w, stats) for s in streams]
        kinds = [win.kind for win in self.windows]
        normal = np.concatenate([f for f, k in zip(fused, kinds) if k == "normal"])

        def auc(chosen) -> float:
            pseudo = np.concatenate([f for f, k in zip(fused, kinds) if k in chosen])
            return metrics.micro_auc(np.r_[normal, pseudo], np.r_[np.zeros(len(normal)), np.ones(len(pseudo))])

        present = [k for k in self.kinds if k in kinds]
        return {"auc": auc(present), **{f"auc_{k}": auc((k,)) for k in present}}


def test_set_auc(scorer: Scorer, dataset: str, data_root: str | Path, size: int, with_destroyer: bool) -> float:
    """--select-on-test only: the best micro AUC over the reference's weight grid on the TEST set."""
    videos = make_samples(dataset, Path(data_root), "testing")
    streams = video_streams(scorer, videos, size, progress=False)
    labels = [v.labels[INPUT_FRAMES:] for v in videos]
    return search_weights(streams, labels, with_destroyer and "destroyer_sse" in streams[0])[1]
