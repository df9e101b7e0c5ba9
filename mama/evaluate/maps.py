"""Where: a per-pixel anomaly map for every scored frame, and the regions it boxes.

The generator's error map |prediction - frame| and, with a destroyer, its damage map
|destroyed - prediction| (Scorer.clip_outputs) are each normalised per pixel against their
mean and standard deviation over normal training video (a walkway's edges and a tree always
err more than the sky), so the map says how unusual a pixel's error is for that pixel. The
two z-maps are combined with the frame fusion's own weights for sse and destroyer_sse (c, d:
3 and 1 by default), so the map weighs the two networks as the frame score does; the choice
is made a priori, not on test masks. The map is smoothed by a small Gaussian, and pixels
above the MAP_QUANTILE of the combined map over normal calibration pixels form regions;
regions smaller than MIN_REGION of the frame are noise. Boxes are returned in the source's
own pixels.
"""
from __future__ import annotations

import cv2
import numpy as np

MAP_QUANTILE = 0.999  # of the combined map over normal pixels: above it, a pixel is anomalous
MAP_SIGMA = 1.0  # spatial smoothing of the combined map, in pixels at the model's size
MIN_REGION = 0.002  # the smallest region boxed, as a share of the frame's pixels
STD_FLOOR = 0.1  # a pixel's std is at least this share of the median pixel std (no division by ~0)
SAMPLE_FRAMES = 128  # normal frames kept to set the map threshold


class PixelStats:
    """Running per-pixel mean and std of each map over normal frames, and a fixed sample of
    frames (every k-th, k doubling as frames come) to set the combined map's threshold."""

    def __init__(self):
        self.n = 0
        self.sum: dict[str, np.ndarray] = {}
        self.sumsq: dict[str, np.ndarray] = {}
        self.sample: list[dict[str, np.ndarray]] = []
        self.every = 1

    def add(self, maps: dict[str, np.ndarray]) -> None:
        """maps: {"error": (B, H, W)[, "damage": (B, H, W)]} of normal frames."""
        for name, m in maps.items():
            m = np.asarray(m, dtype=np.float64)
            self.sum[name] = self.sum.get(name, 0.0) + m.sum(axis=0)
            self.sumsq[name] = self.sumsq.get(name, 0.0) + (m * m).sum(axis=0)
        batch = len(next(iter(maps.values())))
        for i in range(batch):
            if (self.n + i) % self.every == 0:
                self.sample.append({k: np.asarray(v[i], dtype=np.float32) for k, v in maps.items()})
        self.n += batch
        if len(self.sample) > SAMPLE_FRAMES:  # keep every other one: the sample stays even over time
            self.sample, self.every = self.sample[::2], self.every * 2

    def finish(self, weights: dict[str, float]) -> dict:
        """The calibration of the maps: per-pixel mean/std, the combination weights, the threshold."""
        if self.n == 0:
            raise ValueError("no normal frames to calibrate the anomaly maps on")
        stats = {}
        for name in self.sum:
            mean = self.sum[name] / self.n
            std = np.sqrt(np.maximum(self.sumsq[name] / self.n - mean * mean, 0.0))
            stats[name] = {"mean": mean.astype(np.float32), "std": std.astype(np.float32)}
        calib = {"stats": stats, "weights": {k: float(v) for k, v in weights.items() if k in stats}}
        mapper = AnomalyMapper({**calib, "threshold": np.inf})
        sample = mapper(*[np.stack([s[k] for s in self.sample]) if k in stats else None for k in ("error", "damage")])
        calib["threshold"] = float(np.quantile(sample, MAP_QUANTILE))
        calib["quantile"] = MAP_QUANTILE
        return calib


class AnomalyMapper:
    """Error (and damage) maps -> the combined, normalised, smoothed anomaly map (module docstring)."""

    def __init__(self, calib: dict):
        self.threshold = float(calib["threshold"])
        self.weights = calib["weights"]
        self.norm = {}
        for name, s in calib["stats"].items():
            std = np.asarray(s["std"], dtype=np.float32)
            floor = STD_FLOOR * float(np.median(std)) + 1e-6
            self.norm[name] = (np.asarray(s["mean"], dtype=np.float32), np.maximum(std, floor))

    def __call__(self, error: np.ndarray, damage: np.ndarray | None = None) -> np.ndarray:
        """(B, H, W) maps -> (B, H, W) float32 combined map."""
        total, weight = 0.0, 0.0
        for name, m in (("error", error), ("damage", damage)):
            w = self.weights.get(name, 0.0)
            if m is None or w == 0 or name not in self.norm:
                continue
            mean, std = self.norm[name]
            total = total + w * (np.asarray(m, dtype=np.float32) - mean) / std
            weight += w
        if weight == 0:
            raise ValueError("the anomaly map needs the generator's error map")
        combined = np.ascontiguousarray(total / weight, dtype=np.float32)
        return np.stack([cv2.GaussianBlur(c, (0, 0), MAP_SIGMA) for c in combined])


def downsample_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A boolean mask at the source's resolution -> (H, W) bool at the model's: a pixel is in
    it when at least half its area is."""
    return cv2.resize(mask.astype(np.float32), (size[1], size[0]), interpolation=cv2.INTER_AREA) >= 0.5


def regions(amap: np.ndarray, threshold: float, native: tuple[int, int], ignore: np.ndarray | None = None,
            min_share: float = MIN_REGION) -> list[list[int]]:
    """Boxes [x0, y0, x1, y1] (source pixels, x1/y1 exclusive) around the connected regions of
    one (H, W) map above `threshold`, largest peak first; pixels in `ignore` ((H, W) bool) never
    count, regions under `min_share` of the frame are dropped."""
    h, w = amap.shape
    hot = amap > threshold
    if ignore is not None:
        hot &= ~ignore
    count, labels, stats, _ = cv2.connectedComponentsWithStats(hot.astype(np.uint8), connectivity=8)
    sy, sx = native[0] / h, native[1] / w
    found = []
    for i in range(1, count):
        x, y, bw, bh, area = stats[i]
        if area < max(1, min_share * h * w):
            continue
        peak = float(amap[labels == i].max())
        box = [int(np.floor(x * sx)), int(np.floor(y * sy)), int(np.ceil((x + bw) * sx)), int(np.ceil((y + bh) * sy))]
        found.append((peak, box))
    return [box for _, box in sorted(found, key=lambda pb: -pb[0])]


def peak_region(amap: np.ndarray, native: tuple[int, int]) -> list[int]:
    """The box [x0, y0, x1, y1] (source pixels) of the hottest region of one map, at half its
    height above the frame's median: where a frame that alarms is most unusual when no region
    passed the map threshold."""
    h, w = amap.shape
    level = float(np.median(amap)) + 0.5 * (float(amap.max()) - float(np.median(amap)))
    _, labels = cv2.connectedComponents((amap >= level).astype(np.uint8), connectivity=8)
    ys, xs = np.nonzero(labels == labels.flat[int(np.argmax(amap))])
    sy, sx = native[0] / h, native[1] / w
    return [int(np.floor(xs.min() * sx)), int(np.floor(ys.min() * sy)), int(np.ceil((xs.max() + 1) * sx)),
            int(np.ceil((ys.max() + 1) * sy))]

