"""`mama score`: per-frame anomaly scores of a user's own video, with alarms.

Uses the online protocol (DESIGN §5 variant): each stream is z-scored with the statistics of
the normal training videos stored in the checkpoint, fused with the checkpoint's weights and
smoothed causally, so a frame's score never depends on later frames and the same numbers
come out when frames arrive one by one. The alarm threshold is the checkpoint's calibrated
quantile of scores on normal training video.
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from rich.progress import Progress  # noqa: E402

from mama.data.datasets import label_intervals, load_video_frames, make_folder_samples, video_background  # noqa: E402
from mama.config import ScoreOptions  # noqa: E402
from mama.errors import MamaError  # noqa: E402
from mama.evaluate.engine import Scorer  # noqa: E402
from mama.features.clips import INPUT_FRAMES  # noqa: E402
from mama.evaluate.fusion import FusionWeights, StreamStats, fuse_online  # noqa: E402
from mama.evaluate.localisation import DESTROYED  # noqa: E402
from mama.features.registry import build_extractor  # noqa: E402
from mama.io import atomic_path, check_output_folder, output_folder  # noqa: E402
from mama.models.build import models_from_run  # noqa: E402
from mama.models.checkpoint import read_file  # noqa: E402
from mama.runtime import pick_device  # noqa: E402

WARMUP_FRAMES = 50  # frames a new camera's background is estimated from, when none is stored
MIN_EVENT_FRAMES = 3  # shorter runs above the threshold are not reported as events


@dataclass(frozen=True)
class Event:
    start: int  # first frame above the threshold (0-based frame index in the video)
    end: int  # last frame above the threshold
    peak: float

    def as_dict(self) -> dict:
        return {"start": self.start, "end": self.end, "peak": round(self.peak, 4)}


def find_events(scores: np.ndarray, threshold: float, first_frame: int = INPUT_FRAMES,
                min_len: int = MIN_EVENT_FRAMES) -> list[Event]:
    """Runs of consecutive frames scoring above `threshold`, at least `min_len` long."""
    return [
        Event(s - 1 + first_frame, e - 1 + first_frame, float(scores[s - 1 : e].max()))
        for s, e in label_intervals(np.asarray(scores) > threshold)
        if e - s + 1 >= min_len
    ]


def score_videos(o: ScoreOptions) -> dict:
    input_path, checkpoint, out, overlay = o.input, o.checkpoint, o.out, o.overlay
    check_output_folder(out)
    if overlay is not None and overlay.is_dir():
        raise MamaError(f"--overlay {overlay} is a folder; give the path of the .mp4 to write")
    payload = read_file(checkpoint, "run")
    calib = payload.get("calibration")
    if calib is None:
        raise MamaError(
            f"{checkpoint} has no calibration (alarm threshold, stream statistics); use a final.pt/best.pt "
            "written by `mama train`, which calibrates on normal training video at the end"
        )
    net_g, net_a, meta = models_from_run(payload, checkpoint, need_destroyer=False)
    dev = pick_device(o.device)
    extractor = build_extractor(meta["motion"], meta["labels"], dev, o.motion_weights, o.label_weights)
    scorer = Scorer(net_g.to(dev).eval(), extractor, net_a.to(dev).eval() if net_a is not None else None,
                    dev, batch_size=o.batch_size)
    size = int(meta["size"])
    stats = StreamStats(calib["stats"]["mean"], calib["stats"]["std"])
    weights = FusionWeights(**calib["weights"])
    threshold, sigma = float(calib["threshold"]), float(calib["sigma"])
    videos = make_folder_samples(input_path)
    if overlay is not None and len(videos) != 1:
        raise MamaError(f"--overlay writes one video, but {input_path} holds {len(videos)}; score one video file or frame folder")
    results = []
    with Progress(transient=True) as bar:
        task = bar.add_task("scoring", total=len(videos))
        for v in videos:
            frames = load_video_frames(v, (size, size))
            if frames.shape[0] <= INPUT_FRAMES:
                raise MamaError(f"{v.source}: {frames.shape[0]} frames; scoring needs at least {INPUT_FRAMES + 1}")
            bg = None
            if extractor.needs_background:
                stored = calib.get("background")
                bg = stored.numpy() if stored is not None else video_background(frames[:WARMUP_FRAMES])
            streams = scorer.video_streams(frames, bg)
            scores = fuse_online(streams, weights, stats, sigma)
            results.append((v, frames, bg, streams, scores, find_events(scores, threshold)))
            bar.advance(task)

    summary = {
        "input": str(input_path),
        "checkpoint": str(checkpoint),
        "protocol": "online",
        "threshold": threshold,
        "threshold_quantile": calib.get("quantile"),
        "weights": weights.as_dict(),
        "videos": [],
    }
    with output_folder(out):
        _write(out, summary, results, threshold)
    if overlay is not None:
        v, frames, bg, _, scores, _ = results[0]
        write_overlay(overlay, scorer, frames, bg, scores, threshold)
    return summary


def _write(out: Path, summary: dict, results: list, threshold: float) -> None:
    names = [k for k in ("sim_motion", "sim_label", "sse", "destroyer_sse") if k in results[0][3]]
    with atomic_path(out / "scores.csv") as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["video", "frame", *names, "score", "alarm"])
        for v, _, _, streams, scores, events in results:
            for i, s in enumerate(scores):
                w.writerow([v.name, i + INPUT_FRAMES, *(f"{streams[n][i]:.6g}" for n in names), f"{s:.6g}", int(s > threshold)])
            summary["videos"].append({
                "video": v.name, "source": str(v.source), "frames": int(len(scores) + INPUT_FRAMES),
                "first_scored_frame": INPUT_FRAMES, "scores": [round(float(s), 5) for s in scores],
                "events": [e.as_dict() for e in events],
            })
    with atomic_path(out / "scores.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=1))
    for v, _, _, _, scores, events in results:
        _plot(out / f"scores_{v.name}.png", v.name, scores, threshold, events)


def _plot(path: Path, name: str, scores: np.ndarray, threshold: float, events: list[Event]) -> None:
    fig, ax = plt.subplots(figsize=(8, 2.4))
    x = np.arange(len(scores)) + INPUT_FRAMES
    ax.plot(x, scores, lw=1, label="score")
    ax.axhline(threshold, color="red", lw=0.8, ls="--", label="alarm threshold")
    for e in events:
        ax.axvspan(e.start, e.end, color="orange", alpha=0.3, lw=0)
    ax.set_xlabel("frame")
    ax.set_title(f"{name}: online anomaly score ({len(events)} events)", fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


@torch.inference_mode()
def write_overlay(path: Path, scorer: Scorer, frames: np.ndarray, background, scores: np.ndarray,
                  threshold: float, scale: int = 2) -> None:
    """An mp4 of the scored frames with the score, the alarm state and the regions the
    destroyer painted over (where its output departs from the prediction) drawn in red."""
    h, w = frames.shape[-2:]
    size = (w * scale, h * scale)
    with atomic_path(path, suffix=path.suffix or ".mp4") as tmp:
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, size)
        if not writer.isOpened():
            raise MamaError(f"cannot write the overlay video {path}; give a path ending in .mp4 in a writable folder")
        try:
            for chunk, _, damage in scorer.video_maps(frames, background):
                for k, idx in enumerate(chunk):
                    img = ((frames[idx].transpose(1, 2, 0) + 1) * 127.5).clip(0, 255).astype(np.uint8)
                    img = cv2.resize(np.ascontiguousarray(img), size, interpolation=cv2.INTER_NEAREST)
                    mask = cv2.resize((damage[k] > DESTROYED).astype(np.uint8), size, interpolation=cv2.INTER_NEAREST)
                    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
                    cv2.drawContours(img, contours, -1, (0, 0, 255), 1)
                    s = float(scores[idx - INPUT_FRAMES])
                    alarm = s > threshold
                    bar_w = int(np.clip(s / max(threshold, 1e-6) * 0.5, 0, 1) * (size[0] - 8))
                    cv2.rectangle(img, (4, size[1] - 10), (4 + bar_w, size[1] - 4),
                                  (0, 0, 255) if alarm else (0, 200, 0), -1)
                    cv2.putText(img, f"{idx:05d} score {s:+.2f}{' ALARM' if alarm else ''}", (4, 14),
                                cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 255) if alarm else (255, 255, 255), 1, cv2.LINE_AA)
                    writer.write(img)
        finally:
            writer.release()
