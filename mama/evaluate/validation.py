"""Choosing a checkpoint without test labels: pseudo-anomalies made from normal training video.

The reference code keeps the checkpoint with the best TEST AUC. Without test labels we ask
the same question of anomalies we can make ourselves: how well does the model's fused score
separate normal training clips from pseudo-anomalous clips made from the same videos? The
kinds are graded, from ones a trained model finds at once to ones that stay hard, so the
figure does not saturate (the old pair, 3x speed-up and an inverted square, gave 1.0 at every
validation on Ped2):

  fast1.5x, fast2x, fast3x   the clip played faster (frame steps of 1.5 on average, 2, 3):
                             everything moves faster than it did;
  reverse                    the clip played backwards;
  object                     an object cut from another training video (its pixels that differ
                             from that video's background) pasted in, crossing the scene at
                             OBJECT_SPEED: a cyclist's pace, not a walker's;
  appearance                 the same kind of object at a walker's pace, its colours inverted;
  stop                       an object pasted in that never moves, where things move;
  patch                      a square of another training frame, colours inverted, moving fast.

Streams are fused as in the online protocol: z-scores from the normal clips' statistics, the
given weights. The figure is the mean over kinds of the AUC of normal vs that kind's clips
(each kind counts the same). No test video is read. The set is fixed per run (seeded) and its
features are computed once; a validation runs the networks.

`test_set_auc` is `--select-on-test` only: the reference's choice, the best AUC over its
weight grid on the TEST labels.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from mama.data.datasets import VideoRecord, make_samples, read_background, read_video_frames
from mama.evaluate.calibrate import effective_weights
from mama.evaluate.engine import Scorer
from mama.evaluate.fusion import (PAPER_WEIGHTS, STREAMS, FusionWeights, StreamStats, oracle_grid, rank_auc,
                                  search_weights)
from mama.errors import MamaError
from mama.evaluate.streams import video_streams
from mama.features.clips import INPUT_FRAMES
from mama.features.extractor import FeatureExtractor
from mama.features.store import FeatureStore

SPEEDUPS = {"fast1.5x": 1.5, "fast2x": 2.0, "fast3x": 3.0}  # kind: average step between the clip's frames
PATCH_FRACTION = 4  # a pasted square is size // 4 wide (64 px at 256)
PATCH_SPEED = 1 / 32  # of the frame size per frame: 8 px at 256, several times walking speed
OBJECT_SPEED = 1 / 64  # 4 px per frame at 256: a cyclist's pace on a campus walkway
WALKING_SPEED = 1 / 256  # 1 px per frame at 256
OBJECT_DIFF = 0.15  # |frame - background| (frames in [-1, 1]) above which a pixel is part of an object
OBJECT_FRAMES = 8  # donor frames searched for the largest object
WINDOW_VIDEOS = 4  # the set is drawn from at most this many videos, evenly spaced
# Both stages are validated on every kind: the destroyer earns its keep when it makes them
# MORE anomalous than the generator alone does.
PSEUDO_KINDS = (*SPEEDUPS, "reverse", "object", "appearance", "stop", "patch")


@dataclass
class Window:
    """Consecutive frames of one kind ("normal" or a pseudo-anomaly): video `index` of the store."""

    kind: str
    index: int
    frames: torch.Tensor  # (T, 3, S, S) on the device


@dataclass
class Cutout:
    """Pixels of an object (or a square) to paste: `pixels` (3, h, w), `mask` (h, w) bool."""

    pixels: np.ndarray
    mask: np.ndarray


def _paste_moving(frames: np.ndarray, cut: Cutout, speed: float, rng: np.random.Generator) -> np.ndarray:
    """`frames` (L, 3, S, S) with `cut` pasted on a straight path across them, `speed` of the
    frame size per frame in a random direction (0: in one place)."""
    length, _, size, _ = frames.shape
    h, w = cut.mask.shape
    angle = rng.uniform(0, 2 * math.pi)
    velocity = speed * size * np.array([math.cos(angle), math.sin(angle)])
    limit = np.array([size - w, size - h])
    centre = rng.uniform(0, 1, 2) * limit
    out = frames.copy()
    for t in range(length):
        x, y = np.clip(np.round(centre + velocity * (t - (length - 1) / 2)), 0, limit).astype(int)
        region = out[t, :, y : y + h, x : x + w]
        region[:] = np.where(cut.mask, cut.pixels, region)
    return out


def _square(frame: np.ndarray, rng: np.random.Generator) -> Cutout:
    """A random size // PATCH_FRACTION square of `frame`, channels reversed and intensity inverted."""
    size = frame.shape[-1]
    p = max(4, size // PATCH_FRACTION)
    y, x = rng.integers(0, size - p + 1, 2)
    pixels = -frame[::-1, y : y + p, x : x + p]
    return Cutout(np.ascontiguousarray(pixels), np.ones((p, p), bool))


def _largest_object(frames: np.ndarray, background: np.ndarray) -> Cutout | None:
    """The largest connected region that differs from the background in any of `frames`,
    at most half the frame wide; None when nothing does (an empty scene)."""
    size = frames.shape[-1]
    best = None
    for frame in frames:
        found, n = ndimage.label(np.abs(frame - background).mean(axis=0) > OBJECT_DIFF)
        for k, box in enumerate(ndimage.find_objects(found), start=1):
            mask = found[box] == k
            if max(mask.shape) <= size // 2 and mask.sum() >= 4 and (best is None or mask.sum() > best.mask.sum()):
                best = Cutout(np.ascontiguousarray(frame[:, box[0], box[1]]), mask)
    return best


def _picks(videos: list[VideoRecord]) -> np.ndarray:
    """The videos the set is drawn from: at most WINDOW_VIDEOS, evenly spaced."""
    return np.unique(np.linspace(0, len(videos) - 1, min(len(videos), WINDOW_VIDEOS)).round().astype(int))


def _speedup(clips: int, speed: float) -> np.ndarray:
    """Frame offsets of a clip played `speed` times faster: clips + INPUT_FRAMES of them."""
    return np.round(np.arange(clips + INPUT_FRAMES) * speed).astype(int)


def check_pseudo_anomalies(videos: list[VideoRecord], kinds: tuple[str, ...]) -> None:
    """The videos can give a pseudo-anomalous clip of one of `kinds` (one pasted into a normal
    clip always can; a sped-up one needs more frames); checked before training, not at the
    first validation an hour in."""
    if set(kinds) - set(SPEEDUPS) or not kinds:
        return
    need = int(_speedup(1, min(SPEEDUPS[k] for k in kinds))[-1]) + 1
    if any(videos[i].num_frames >= need for i in _picks(videos)):
        return
    names = ", ".join(videos[i].name for i in _picks(videos))
    raise MamaError(f"the validation videos ({names}) are too short for pseudo-anomalous (sped-up) clips: each has "
                    f"fewer than {need} frames; use longer training videos")


def _pseudo_clip(kind: str, video: VideoRecord, normal: np.ndarray, thing: Cutout, square: Cutout, clips: int,
                 size: int, rng: np.random.Generator) -> np.ndarray | None:
    """The frames of one `kind` of pseudo-anomalous clip made from `video` (its `normal` frames,
    an object `thing` and a `square` cut from another video); None when the video is too short
    for a sped-up clip. Draws from `rng` in a fixed order, so a seed fixes the set."""
    if kind in SPEEDUPS:
        total = video.num_frames
        fits = [c for c in range(min(clips, total), 0, -1) if _speedup(c, SPEEDUPS[kind])[-1] < total]
        if not fits:
            return None
        offsets = _speedup(fits[0], SPEEDUPS[kind])
        start = int(rng.integers(0, total - offsets[-1]))
        return read_video_frames(video, start + offsets, (size, size))
    if kind == "reverse":
        return normal[::-1]
    if kind == "object":
        return _paste_moving(normal, thing, OBJECT_SPEED, rng)
    if kind == "appearance":
        return _paste_moving(normal, Cutout(np.ascontiguousarray(-thing.pixels[::-1]), thing.mask), WALKING_SPEED, rng)
    if kind == "stop":
        return _paste_moving(normal, thing, 0.0, rng)
    if kind == "patch":
        return _paste_moving(normal, square, PATCH_SPEED, rng)
    raise ValueError(f"unknown pseudo-anomaly kind {kind!r}; use one of {', '.join(PSEUDO_KINDS)}")


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
            feature_bg = read_background(video, (size, size), frames_total) if extractor.needs_background else None
            clips = min(per_video, frames_total - INPUT_FRAMES)
            start = int(rng.integers(0, frames_total - (clips + INPUT_FRAMES) + 1))
            normal = read_video_frames(video, range(start, start + clips + INPUT_FRAMES), (size, size))
            add("normal", normal, feature_bg)
            donor = videos[picks[(n + 1) % len(picks)]]
            donor_frames = read_video_frames(
                donor, np.linspace(0, donor.num_frames - 1, min(OBJECT_FRAMES, donor.num_frames)).round().astype(int),
                (size, size))
            square = _square(donor_frames[int(rng.integers(0, len(donor_frames)))], rng)
            # A scene with nothing in it gives no object: the square stands in for one.
            thing = _largest_object(donor_frames, read_background(donor, (size, size))) or square
            for kind in self.kinds:
                frames = _pseudo_clip(kind, video, normal, thing, square, per_video, size, rng)
                if frames is not None:
                    add(kind, frames, feature_bg)
        if not any(w.kind != "normal" for w in self.windows):  # check_pseudo_anomalies said so before
            raise ValueError("the training videos are too short to make pseudo-anomalous clips")

    @property
    def clips(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for w in self.windows:
            out[w.kind] = out.get(w.kind, 0) + w.frames.shape[0] - INPUT_FRAMES
        return out

    def streams(self, scorer: Scorer) -> list[dict[str, np.ndarray]]:
        """Each window's score streams (the networks run once per call)."""
        return [scorer.stored_streams(self.store, w.index, w.frames) for w in self.windows]

    def kind_aucs(self, streams: list[dict[str, np.ndarray]], grid: list[FusionWeights]) -> dict[str, np.ndarray]:
        """{kind: (G,) AUC of normal vs that kind's clips under each of `grid`'s weightings}, the
        streams z-scored with the normal clips' statistics (the online protocol's fusion)."""
        stats = StreamStats.from_streams([s for s, w in zip(streams, self.windows) if w.kind == "normal"])
        matrix = np.array([list(g.values()) for g in grid])
        used = [i for i, name in enumerate(STREAMS) if matrix[:, i].any()]
        missing = [STREAMS[i] for i in used if STREAMS[i] not in stats.mean]
        if missing:
            raise ValueError(f"fusion weights for {', '.join(missing)}, a stream this model does not produce")
        fused = np.concatenate([matrix[:, used] @ np.stack([(s[STREAMS[i]] - stats.mean[STREAMS[i]]) / stats.std[STREAMS[i]]
                                                            for i in used]) for s in streams], axis=1)
        kind = np.concatenate([np.full(len(s["sse"]), w.kind) for s, w in zip(streams, self.windows)])
        out = {}
        for k in self.kinds:
            if (kind == k).any():
                cols = (kind == "normal") | (kind == k)
                out[k] = rank_auc(fused[:, cols], kind[cols] == k)
        return out

    def proxy(self, streams: list[dict[str, np.ndarray]], grid: list[FusionWeights]) -> np.ndarray:
        """(G,) the proxy figure of each weighting: the mean of its per-kind AUCs."""
        return np.mean(list(self.kind_aucs(streams, grid).values()), axis=0)

    def fit_weights(self, scorer: Scorer, with_destroyer: bool) -> tuple[FusionWeights, float]:
        """The candidate weights (`fusion_candidates`) that best separate this set's pseudo-anomalous
        clips from its normal ones (`mama eval --fit-weights`), with the proxy figure they reach."""
        streams = self.streams(scorer)
        grid = [effective_weights(g, streams[0]) for g in fusion_candidates(with_destroyer and "destroyer_sse" in streams[0])]
        grid = [g for g in dict.fromkeys(grid) if any(g.as_dict().values())]
        figure = self.proxy(streams, grid)
        best = int(np.argmax(figure))
        return grid[best], float(figure[best])

    def score(self, scorer: Scorer, weights: FusionWeights = PAPER_WEIGHTS) -> dict[str, float]:
        """{"auc": the mean over kinds of "auc_<kind>", normal vs that kind's clips}; weights of
        streams the scorer does not produce are zeroed (no destroyer: the generator's fusion)."""
        streams = self.streams(scorer)
        per_kind = {f"auc_{k}": float(v[0]) for k, v in
                    self.kind_aucs(streams, [effective_weights(weights, streams[0])]).items()}
        return {"auc": float(np.mean(list(per_kind.values()))), **per_kind}


def fusion_candidates(with_destroyer: bool) -> list[FusionWeights]:
    """The weights a label-free fit chooses among: the reference's grid and a few points that
    lean on the prediction error, outside it (sse alone; sse with the destroyer)."""
    extra = [FusionWeights(sse=1)] + ([FusionWeights(sse=3, destroyer_sse=1), FusionWeights(sse=1, destroyer_sse=1)]
                                      if with_destroyer else [])
    return oracle_grid(with_destroyer) + extra


def test_set_auc(scorer: Scorer, dataset: str, data_root: str | Path, size: int, with_destroyer: bool) -> float:
    """--select-on-test only: the best micro AUC over the reference's weight grid on the TEST set."""
    videos = make_samples(dataset, Path(data_root), "testing")
    streams = video_streams(scorer, videos, size, progress=False)
    labels = [v.labels[INPUT_FRAMES:] for v in videos]
    return search_weights(streams, labels, with_destroyer and "destroyer_sse" in streams[0])[1]
