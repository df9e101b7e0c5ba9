"""Does the destroyer destroy the anomalies? Pixel-level figures on a test set with per-pixel
anomaly masks (the synthetic dataset writes them: testing/pixel_masks/<video>.npy).

For every scored frame the destroyer's damage map |destroyed - prediction| (max over
channels) is compared with the anomaly mask: its pixel-level AUROC, and how much of the
anomalies and of the rest it destroys (damage above DESTROYED). The generator's own error map
|prediction - frame| is given beside it, as the baseline the destroyer should sharpen.
AUROCs are computed from fine histograms (exact up to 1/BINS of the damage range), so any
number of pixels fits in memory.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from mama.data.datasets import VideoRecord
from mama.errors import MamaError
from mama.evaluate.engine import Scorer
from mama.evaluate.streams import scoring_inputs
from mama.features.clips import INPUT_FRAMES

DESTROYED = 0.5  # damage (in [-1, 1] units, a quarter of the range) above which a pixel counts as destroyed
BINS = 4000  # over [0, 2], the largest possible difference


def mask_dir(data_root: str | Path, dataset: str) -> Path:
    return Path(data_root) / dataset / "testing" / "pixel_masks"


def read_mask_file(path: Path, num_frames: int, mmap: bool = False) -> np.ndarray:
    """A video's (T, H, W) 0/1 pixel masks; a file that is empty, pickled, of another shape or
    not numeric is one MamaError naming it (`mmap`: the header only, for checking up front)."""
    fix = "re-create it (np.save of a (frames, height, width) 0/1 array) or remove the pixel_masks folder"
    try:
        masks = np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
    except (OSError, ValueError, EOFError, SyntaxError) as exc:
        reason = "an empty file" if path.stat().st_size == 0 else " ".join(str(exc).split()[:8]) or type(exc).__name__
        raise MamaError(f"{path}: cannot read these pixel masks ({reason}); {fix}") from None
    if masks.ndim != 3 or masks.shape[0] != num_frames or not (masks.dtype == bool or np.issubdtype(masks.dtype, np.number)):
        raise MamaError(f"{path}: pixel masks of shape {masks.shape} and type {masks.dtype}, but the video has "
                        f"{num_frames} frames: (frames, height, width) numbers expected; {fix}")
    return masks


def check_masks(folder: Path, videos: list[VideoRecord]) -> bool:
    """Whether every test video has a pixel mask file (then each is checked, before any scoring)."""
    if not (folder.is_dir() and all((folder / f"{v.name}.npy").is_file() for v in videos)):
        return False
    for v in videos:
        read_mask_file(folder / f"{v.name}.npy", v.num_frames, mmap=True)
    return True


def load_masks(folder: Path, video: VideoRecord, size: int) -> np.ndarray:
    """(T-4, size, size) bool masks of the scored frames; a pixel is anomalous when at least
    half of its area is (masks are resized from the dataset's own resolution)."""
    masks = read_mask_file(folder / f"{video.name}.npy", video.num_frames)[INPUT_FRAMES:]
    return np.stack([cv2.resize(m.astype(np.float32), (size, size), interpolation=cv2.INTER_AREA) >= 0.5 for m in masks])


def binned_auroc(positive: np.ndarray, negative: np.ndarray) -> float:
    """AUROC from two histograms over the same ascending bins (ties in a bin count half)."""
    pos, neg = positive.astype(np.float64), negative.astype(np.float64)
    if pos.sum() == 0 or neg.sum() == 0:
        return float("nan")
    below = np.cumsum(neg) - neg  # negatives in lower bins
    return float((pos * (below + 0.5 * neg)).sum() / (pos.sum() * neg.sum()))


class _Tally:
    def __init__(self):
        self.hist = {k: np.zeros(BINS) for k in ("in", "out")}
        self.sum = {"in": 0.0, "out": 0.0}
        self.above = {"in": 0, "out": 0}
        self.count = {"in": 0, "out": 0}

    def add(self, values: np.ndarray, mask: np.ndarray) -> None:
        for side, sel in (("in", mask), ("out", ~mask)):
            v = values[sel]
            self.hist[side] += np.histogram(v, bins=BINS, range=(0.0, 2.0))[0]
            self.sum[side] += float(v.sum())
            self.above[side] += int((v > DESTROYED).sum())
            self.count[side] += int(v.size)

    def summary(self, prefix: str) -> dict[str, float]:
        frac = {s: self.above[s] / max(self.count[s], 1) for s in ("in", "out")}
        total = self.above["in"] + self.above["out"]
        return {
            f"{prefix}_pixel_auroc": binned_auroc(self.hist["in"], self.hist["out"]),
            f"{prefix}_mean_inside": self.sum["in"] / max(self.count["in"], 1),
            f"{prefix}_mean_outside": self.sum["out"] / max(self.count["out"], 1),
            f"{prefix}_above_{DESTROYED:g}_inside": frac["in"],
            f"{prefix}_above_{DESTROYED:g}_outside": frac["out"],
            f"{prefix}_share_of_pixels_above_{DESTROYED:g}_in_anomalies": self.above["in"] / total if total else float("nan"),
        }


def localisation(scorer: Scorer, videos: list[VideoRecord], size: int, masks: Path) -> dict[str, float]:
    """Pixel-level figures of the destroyer's damage (and the generator's error) against the masks."""
    damage, error = _Tally(), _Tally()
    for v in videos:
        frames, bg, key = scoring_inputs(scorer, v, size)
        m = load_masks(masks, v, size)
        for targets, err, dmg in scorer.video_maps(frames, bg, key, size):
            rows = [t - INPUT_FRAMES for t in targets]
            if dmg is not None:
                damage.add(dmg, m[rows])
            error.add(err, m[rows])
    out = {"anomalous_pixels": damage.count["in"], "normal_pixels": damage.count["out"],
           **damage.summary("damage"), **error.summary("generator_error")}
    return out
