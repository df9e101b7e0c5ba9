"""Label-free statistics on normal video: the calibration that `mama score` and the online
protocol use (stream mean/std, alarm threshold, each video's online scores and frame rate for
an alarm rate, the per-pixel statistics of the anomaly maps)."""
from __future__ import annotations

import numpy as np
import torch

from mama.config import ONLINE_SIGMA
from mama.data.datasets import VideoRecord, read_background, video_fps
from mama.evaluate.engine import Scorer
from mama.evaluate.maps import PixelStats
from mama.evaluate.fusion import FusionWeights, StreamStats, fuse_online
from mama.evaluate.streams import video_streams

ALARM_QUANTILE = 0.995  # of online scores on normal frames: ~0.5% false alarms on normal video


def effective_weights(weights: FusionWeights, streams: dict) -> FusionWeights:
    """Zero the weight of a stream that this model does not produce (no labels, no destroyer)."""
    return weights.without(*(n for n in weights if n not in streams))


def scene_background(videos: list[VideoRecord], size: int) -> np.ndarray:
    """A fixed camera's background from its normal videos: median of per-video medians (each
    read from its <= 64 evenly spaced frames only, whatever its length)."""
    return np.median(np.stack([read_background(v, (size, size)) for v in videos]), axis=0)


def calibrate(scorer: Scorer, videos: list[VideoRecord], size: int, weights: FusionWeights,
              max_frames: int | None = None) -> dict:
    """Stream statistics and the alarm threshold of the fusion `weights` on normal videos (stored
    in checkpoints), from at most `max_frames` scored frames of each (None: all)."""
    background = scene_background(videos, size) if scorer.extractor.needs_background else None
    pixels = PixelStats()
    streams = video_streams(scorer, videos, size, background, description="calibrating", max_frames=max_frames,
                            on_maps=pixels.add)
    stats = StreamStats.from_streams(streams)
    w = effective_weights(weights, streams[0])
    per_video = [fuse_online(s, w, stats, ONLINE_SIGMA) for s in streams]
    fused = np.concatenate(per_video)
    calib = {
        "stats": stats.as_dict(),
        "weights": w.as_dict(),
        "threshold": float(np.quantile(fused, ALARM_QUANTILE)),
        "quantile": ALARM_QUANTILE,
        "sigma": ONLINE_SIGMA,
        "videos": [v.name for v in videos],
        "frames": int(fused.size),
        "size": size,
        # What `mama score` sets an alarm rate with (--false-alarms-per-hour) and draws maps with.
        "normal_scores": [torch.from_numpy(v.astype(np.float32)) for v in per_video],
        "fps": [video_fps(v) for v in videos],
        "maps": _as_tensors(pixels.finish({"error": w["sse"], "damage": w["destroyer_sse"]})),
    }
    if background is not None:
        calib["background"] = torch.from_numpy(np.ascontiguousarray(background, dtype=np.float32))
    return calib


def _as_tensors(tree):
    """numpy arrays -> tensors (a checkpoint is read weights-only: no numpy objects)."""
    if isinstance(tree, dict):
        return {k: _as_tensors(v) for k, v in tree.items()}
    return torch.from_numpy(np.ascontiguousarray(tree)) if isinstance(tree, np.ndarray) else tree
