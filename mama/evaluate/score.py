"""`mama score`: a user's own video or camera, scored frame by frame as it arrives, with alarms.

Inputs: a video file, a folder of frames, a folder of videos, a URL OpenCV opens (rtsp://,
http://, ...) or a camera (`--camera N`). Frames are decoded, scored and written as they come
(mama.evaluate.engine.StreamScorer): memory holds a chunk of frames whatever the length, so a
camera that never stops can be followed. While it runs:
  * every scored frame is appended to scores.csv (flushed at least once a second), so a crash
    or Ctrl-C loses nothing already scored;
  * each alarm event is printed on standard output as one JSON line the moment it closes (and
    appended to events.jsonl);
  * the progress line shows frames per second and the latency from a frame's arrival to its score.
At the end (or on Ctrl-C) scores.json (every score, the events, latency percentiles) and a plot
per video are written, and the overlay video if asked.

The online protocol (DESIGN §5 variant): each stream is z-scored with the statistics of the
normal training videos stored in the checkpoint, fused with the checkpoint's weights and
smoothed causally, so a frame's score never depends on later frames; scoring a finite input
this way gives the whole-video scorer's numbers (mama.evaluate.fusion.OnlineFusion). The alarm
threshold is the checkpoint's calibrated quantile of scores on normal training video.
"""
from __future__ import annotations

import csv
import itertools
import json
import time
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from rich.progress import Progress, TextColumn, TimeElapsedColumn  # noqa: E402

from mama.config import ScoreOptions  # noqa: E402
from mama.data.datasets import frame_to_model_range, iter_video_frames, label_intervals, make_folder_samples, video_background  # noqa: E402
from mama.errors import MamaError  # noqa: E402
from mama.evaluate.engine import Scorer, pixel_difference  # noqa: E402
from mama.evaluate.fusion import FusionWeights, OnlineFusion, StreamStats  # noqa: E402
from mama.evaluate.localisation import DESTROYED  # noqa: E402
from mama.features.clips import INPUT_FRAMES  # noqa: E402
from mama.features.registry import build_extractor  # noqa: E402
from mama.io import atomic_path, check_output_folder, output_folder  # noqa: E402
from mama.models.build import models_from_run  # noqa: E402
from mama.models.checkpoint import read_file  # noqa: E402
from mama.runtime import StopRequest, pick_device  # noqa: E402

WARMUP_FRAMES = 50  # frames a new camera's background is estimated from, when none is stored
MIN_EVENT_FRAMES = 3  # shorter runs above the threshold are not reported as events
FLUSH_SECONDS = 1.0  # scores.csv is flushed at least this often
URL_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")


@dataclass(frozen=True)
class Event:
    start: int  # first frame above the threshold (0-based frame index in the video)
    end: int  # last frame above the threshold
    peak: float

    def as_dict(self) -> dict:
        return {"start": self.start, "end": self.end, "peak": round(self.peak, 4)}


class EventTracker:
    """Runs of consecutive frames above the threshold, closed as soon as a frame falls below
    (runs shorter than `min_len` are not events)."""

    def __init__(self, threshold: float, min_len: int = MIN_EVENT_FRAMES):
        self.threshold, self.min_len = threshold, min_len
        self.start: int | None = None
        self.peak = -np.inf
        self.last = -1

    def push(self, frame: int, score: float) -> Event | None:
        self.last = frame
        if score > self.threshold:
            if self.start is None:
                self.start, self.peak = frame, score
            self.peak = max(self.peak, score)
            return None
        return self.close(frame - 1)

    def close(self, end: int | None = None) -> Event | None:
        """End the open run (at `end`, default the last frame seen); its event if long enough."""
        if self.start is None:
            return None
        end = self.last if end is None else end
        event = Event(self.start, end, float(self.peak)) if end - self.start + 1 >= self.min_len else None
        self.start, self.peak = None, -np.inf
        return event


def find_events(scores: np.ndarray, threshold: float, first_frame: int = INPUT_FRAMES,
                min_len: int = MIN_EVENT_FRAMES) -> list[Event]:
    """Runs of consecutive frames scoring above `threshold`, at least `min_len` long."""
    return [
        Event(s - 1 + first_frame, e - 1 + first_frame, float(scores[s - 1 : e].max()))
        for s, e in label_intervals(np.asarray(scores) > threshold)
        if e - s + 1 >= min_len
    ]


# ---------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------
@dataclass
class FrameSourceSpec:
    """One input stream: its name, where it comes from, its frames (3, H, W) [-1, 1] in order."""

    name: str
    source: str
    frames: Iterator[np.ndarray]
    fps: float | None = None


def _capture_frames(capture: cv2.VideoCapture, size: int) -> Iterator[np.ndarray]:
    try:
        while True:
            ok, image = capture.read()
            if not ok:
                return
            yield frame_to_model_range(image, (size, size))
    finally:
        capture.release()


def open_inputs(input: Path | str | None, camera: int | None, size: int) -> list[FrameSourceSpec]:
    """The streams to score: a camera, a URL, or a video file / frame folder / folder of videos."""
    if camera is not None:
        capture = cv2.VideoCapture(int(camera))
        if not capture.isOpened():
            raise MamaError(f"--camera {camera}: no camera with that index can be opened; check it is connected "
                            "(ls /dev/video*) and not in use")
        return [FrameSourceSpec(f"camera{camera}", f"camera {camera}", _capture_frames(capture, size),
                                capture.get(cv2.CAP_PROP_FPS) or None)]
    text = str(input)
    if text.lower().startswith(URL_SCHEMES):
        capture = cv2.VideoCapture(text)
        if not capture.isOpened():
            raise MamaError(f"{text}: cannot open this stream; check the URL, that the server is up and that "
                            "OpenCV's FFmpeg reads its format")
        name = Path(text.split("?")[0].rstrip("/")).stem or "stream"
        return [FrameSourceSpec(name, text, _capture_frames(capture, size), capture.get(cv2.CAP_PROP_FPS) or None)]
    videos = make_folder_samples(Path(text))
    return [FrameSourceSpec(v.name, str(v.source), iter_video_frames(v, (size, size))) for v in videos]


# ---------------------------------------------------------------------------------------
# Scoring one stream
# ---------------------------------------------------------------------------------------
@dataclass
class Scored:
    """What one stream gave: per-frame scores and streams, events, latencies."""

    name: str
    source: str
    first_frame: int = INPUT_FRAMES
    # Packed doubles (8 bytes a frame each, not a Python float's 32): a day at 25 frames/s is 35 MB.
    scores: array = field(default_factory=lambda: array("d"))
    events: list[Event] = field(default_factory=list)
    latencies: array = field(default_factory=lambda: array("d"))
    frames: int = 0
    seconds: float = 0.0


class _Overlay:
    """An mp4 of the scored frames: the score, the alarm state, and the regions the destroyer
    painted over (where its output departs from the prediction) in red, written as scored."""

    def __init__(self, path: Path, threshold: float, fps: float | None, scale: int = 2):
        self.path, self.threshold, self.scale = path, threshold, scale
        self.fps = fps or 10.0
        self._atomic = atomic_path(path, suffix=path.suffix or ".mp4")
        self.tmp = self._atomic.__enter__()
        self.writer = None

    def add(self, index: int, frame: torch.Tensor, damage: np.ndarray, score: float) -> None:
        h, w = frame.shape[-2:]
        size = (w * self.scale, h * self.scale)
        if self.writer is None:
            self.writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, size)
            if not self.writer.isOpened():
                raise MamaError(f"cannot write the overlay video {self.path}; give a path ending in .mp4 in a writable folder")
        img = ((frame.float().cpu().numpy().transpose(1, 2, 0) + 1) * 127.5).clip(0, 255).astype(np.uint8)
        img = cv2.resize(np.ascontiguousarray(img), size, interpolation=cv2.INTER_NEAREST)
        mask = cv2.resize((damage > DESTROYED).astype(np.uint8), size, interpolation=cv2.INTER_NEAREST)
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(img, contours, -1, (0, 0, 255), 1)
        alarm = score > self.threshold
        bar_w = int(np.clip(score / max(self.threshold, 1e-6) * 0.5, 0, 1) * (size[0] - 8))
        cv2.rectangle(img, (4, size[1] - 10), (4 + bar_w, size[1] - 4), (0, 0, 255) if alarm else (0, 200, 0), -1)
        cv2.putText(img, f"{index:05d} score {score:+.2f}{' ALARM' if alarm else ''}", (4, 14),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 255) if alarm else (255, 255, 255), 1, cv2.LINE_AA)
        self.writer.write(img)

    def close(self, ok: bool) -> None:
        if self.writer is not None:
            self.writer.release()
        if ok and self.writer is not None:
            self._atomic.__exit__(None, None, None)
        else:
            self._atomic.__exit__(RuntimeError, RuntimeError("no overlay"), None)


def score_stream(scorer: Scorer, spec: FrameSourceSpec, calib: dict, csv_writer, csv_file, overlay: _Overlay | None,
                 on_event, stop: StopRequest, bar=None) -> Scored:
    """Score one stream frame by frame (module docstring). When `stop` is requested (SIGINT,
    SIGTERM) it stops reading, scores what was read, and raises KeyboardInterrupt(result)."""
    stats = StreamStats(calib["stats"]["mean"], calib["stats"]["std"])
    weights = FusionWeights(**calib["weights"])
    threshold, sigma = float(calib["threshold"]), float(calib["sigma"])
    result = Scored(spec.name, spec.source)
    fusion, events = OnlineFusion(weights, stats, sigma), EventTracker(threshold)
    names = scorer.stream_names
    arrived: dict[int, float] = {}
    last_flush = time.monotonic()
    t0 = time.monotonic()
    task = bar.add_task(spec.name, total=None, info="") if bar is not None else None

    def emit(targets: list[int], inputs) -> None:
        nonlocal last_flush
        streams = scorer.clip_streams(*inputs)
        damage = None
        if overlay is not None:
            pred, destroyed = scorer.destroyed(*inputs[:3])
            damage = pixel_difference(destroyed, pred)
        now = time.monotonic()
        for j, t in enumerate(targets):
            row = {k: float(streams[k][j]) for k in names}
            score = fusion.push(row)
            result.scores.append(score)
            result.latencies.append(now - arrived.pop(t))
            csv_writer.writerow([spec.name, t, *(f"{row[k]:.9g}" for k in names), f"{score:.9g}", int(score > threshold)])
            event = events.push(t, score)
            if event is not None:
                result.events.append(event)
                on_event(spec.name, event)
            if overlay is not None:
                overlay.add(t, inputs.target[j], damage[j], score)
        for t in [t for t in arrived if t < INPUT_FRAMES]:  # the first frames are only inputs
            del arrived[t]
        if now - last_flush >= FLUSH_SECONDS:
            csv_file.flush()
            last_flush = now
        if task is not None:
            rate = result.frames / max(now - t0, 1e-9)
            bar.update(task, completed=result.frames,
                       info=f"{rate:.1f} frames/s, latency {np.median(result.latencies[-100:]):.2f} s")

    def frames() -> Iterator[torch.Tensor]:
        for frame in spec.frames:
            if stop.requested:
                return
            arrived[result.frames] = time.monotonic()
            result.frames += 1
            yield torch.from_numpy(frame)

    source = frames()
    try:
        background = calib.get("background")
        warmup = []
        if background is None and scorer.extractor.needs_background:  # a new camera: learn its background first
            for frame in source:
                warmup.append(frame)
                if len(warmup) == WARMUP_FRAMES:
                    break
            if len(warmup) <= INPUT_FRAMES:
                raise MamaError(f"{spec.source}: {len(warmup)} frames; scoring needs at least {INPUT_FRAMES + 1}")
            background = torch.from_numpy(video_background(torch.stack(warmup).numpy()))
        stream = scorer.stream(background)
        for frame in itertools.chain(warmup, source):
            batch = stream.push(frame)
            if batch is not None:
                emit(*batch)
        for batch in stream.finish():  # what was read is scored, stopped or not
            emit(*batch)
    finally:
        csv_file.flush()
    interrupted = stop.requested is not None
    if result.frames <= INPUT_FRAMES and not interrupted:
        raise MamaError(f"{spec.source}: {result.frames} frames; scoring needs at least {INPUT_FRAMES + 1}")
    event = events.close()
    if event is not None:
        result.events.append(event)
        on_event(spec.name, event)
    result.seconds = time.monotonic() - t0
    if interrupted:
        raise KeyboardInterrupt(result)
    return result


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    p50, p95 = np.percentile(values, [50, 95])
    return {"p50": round(float(p50), 4), "p95": round(float(p95), 4)}


def score_videos(o: ScoreOptions) -> dict:
    """Score every input stream; returns the summary written to scores.json."""
    out = check_output_folder(o.out)
    if o.overlay is not None and o.overlay.is_dir():
        raise MamaError(f"--overlay {o.overlay} is a folder; give the path of the .mp4 to write")
    payload = read_file(o.checkpoint, "run")
    calib = payload.get("calibration")
    if calib is None:
        raise MamaError(
            f"{o.checkpoint} has no calibration (alarm threshold, stream statistics); use a final.pt/best.pt "
            "written by `mama train`, which calibrates on normal training video at the end"
        )
    net_g, net_a, meta = models_from_run(payload, o.checkpoint, need_destroyer=False)
    dev = pick_device(o.device)
    extractor = build_extractor(meta["motion"], meta["labels"], dev, o.motion_weights, o.label_weights)
    scorer = Scorer(net_g.to(dev).eval(), extractor, net_a.to(dev).eval() if net_a is not None else None,
                    dev, batch_size=o.batch_size, amp=o.amp, compile=o.compile)
    size = int(meta["size"])
    inputs = open_inputs(o.input, o.camera, size)
    if o.overlay is not None and len(inputs) != 1:
        raise MamaError(f"--overlay writes one video, but {o.input} holds {len(inputs)}; score one video file or frame folder")
    threshold = float(calib["threshold"])
    summary = {"input": str(o.input if o.camera is None else f"camera {o.camera}"), "checkpoint": str(o.checkpoint),
               "protocol": "online", "threshold": threshold, "threshold_quantile": calib.get("quantile"),
               "weights": calib["weights"], "batch_size": o.batch_size, "videos": []}
    results: list[Scored] = []
    interrupted = False
    with output_folder(out):
        events_file = open(out / "events.jsonl", "w", buffering=1)

        def on_event(name: str, event: Event) -> None:
            line = json.dumps({"video": name, **event.as_dict()})
            print(line, flush=True)
            events_file.write(line + "\n")

        with open(out / "scores.csv", "w", newline="") as csv_file, events_file, \
                Progress(TextColumn("[bold]{task.description}"), TextColumn("{task.completed} frames"),
                         TextColumn("{task.fields[info]}"), TimeElapsedColumn(), transient=True) as bar:
            writer = csv.writer(csv_file)
            writer.writerow(["video", "frame", *scorer.stream_names, "score", "alarm"])
            overlay = _Overlay(o.overlay, threshold, inputs[0].fps) if o.overlay is not None else None
            try:
                with StopRequest() as stop:
                    for spec in inputs:
                        try:
                            results.append(score_stream(scorer, spec, calib, writer, csv_file, overlay, on_event, stop, bar))
                        except KeyboardInterrupt as stopped:
                            if stopped.args and isinstance(stopped.args[0], Scored):
                                results.append(stopped.args[0])
                            interrupted = True
                            break
            finally:
                if overlay is not None:
                    overlay.close(ok=bool(results))
        for r in results:
            summary["videos"].append({
                "video": r.name, "source": r.source, "frames": r.frames, "first_scored_frame": r.first_frame,
                "scores": [round(float(s), 7) for s in r.scores], "events": [e.as_dict() for e in r.events],
                "frames_per_second": round(r.frames / max(r.seconds, 1e-9), 2),
                "latency_seconds": _percentiles(r.latencies)})
        summary["interrupted"] = interrupted
        with atomic_path(out / "scores.json") as tmp:
            tmp.write_text(json.dumps(summary, indent=1))
        for r in results:
            if r.scores:
                _plot(out / f"scores_{r.name}.png", r.name, np.asarray(r.scores), threshold, r.events)
    if interrupted:
        raise KeyboardInterrupt(summary)
    return summary


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
