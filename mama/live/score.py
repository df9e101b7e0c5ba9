"""`mama score`: a user's own video or camera scored frame by frame as it arrives, with alarms
a person can act on.

Inputs (mama.live.sources): a video file, a folder of frames, a folder of videos, a URL
(rtsp://, http://, ...) or a camera. A file is scored in the canonical chunks of `--batch-size`
frames (the whole-video scorer's numbers, never a frame dropped). A live source is read by a
thread of its own; whenever the scorer is free it scores every frame that has arrived (up to
`--batch-size`), so a frame's score comes one computation after its arrival, and when the
oldest waiting frame is more than `--max-lag` seconds old the backlog is dropped: scoring
goes on from the newest frames (the 4 frames after a drop are the generator's inputs only).

Per scored frame (one pass of the networks per batch, Scorer.clip_outputs): the streams, the
online score (z-scored with the normal training statistics in the checkpoint, fused, causally
smoothed: mama.evaluate.fusion.OnlineFusion), the anomaly map and its boxes in the source's
pixels (mama.evaluate.maps). Alarms follow an event lifecycle (mama.live.events: new, update,
end; gap for a live source that dropped), printed as JSON lines, kept in events.jsonl, with a
snapshot JPEG at native resolution, and POSTed to a webhook (mama.live.sinks). scores.csv is
appended as frames are scored; scores.json, a plot per source and the overlay video are
written at the end (or on Ctrl-C / SIGTERM, keeping everything scored).
"""
from __future__ import annotations

import csv
import itertools
import json
import math
import sys
import threading
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import cv2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from rich.progress import Progress, TextColumn, TimeElapsedColumn  # noqa: E402

from mama.config import ScoreOptions  # noqa: E402
from mama.data.datasets import frame_to_model_range, make_folder_samples, video_background  # noqa: E402
from mama.errors import MamaError  # noqa: E402
from mama.evaluate.alarms import default_threshold, threshold_for_rate  # noqa: E402
from mama.evaluate.calibrate import calibrate  # noqa: E402
from mama.evaluate.engine import Scorer  # noqa: E402
from mama.evaluate.export import EXPORT_FILE, read_export, scorer_from_export  # noqa: E402
from mama.evaluate.fusion import FusionWeights, OnlineFusion, StreamStats, clean_weights  # noqa: E402
from mama.evaluate.maps import AnomalyMapper, downsample_mask, peak_region, regions  # noqa: E402
from mama.evaluate.picture import draw_frame  # noqa: E402
from mama.features.clips import INPUT_FRAMES  # noqa: E402
from mama.features.registry import build_extractor  # noqa: E402
from mama.io import atomic_path, output_folder  # noqa: E402
from mama.live.draw import OverlayVideo, write_jpeg  # noqa: E402
from mama.live.events import EventTracker, FrameScore, iso_time  # noqa: E402
from mama.live.sinks import EventLog, Webhook, check_webhook  # noqa: E402
from mama.live.sources import DEFAULT_FPS, Frame, Gap, LiveSource, Source, open_sources  # noqa: E402
from mama.models.build import models_from_run, run_meta  # noqa: E402
from mama.models.checkpoint import read_file  # noqa: E402
from mama.runtime import StopRequest, pick_device  # noqa: E402

WARMUP_FRAMES = 50  # frames a new camera's background is estimated from, when none is stored
FLUSH_SECONDS = 1.0  # scores.csv is flushed at least this often
DOMAIN_CHECK_SECONDS = 60.0  # media time after which the scores are compared with the calibration
DROP_KEEP = INPUT_FRAMES + 1  # frames kept when a backlog is dropped: the newest clip
OUTPUT_FILES = ("scores.csv", "events.jsonl", "scores.json")


@dataclass
class Alarms:
    """How frames become alarms for every source of a run."""

    threshold: float
    threshold_from: str  # where it came from, in words
    min_duration: int
    merge_gap: int
    update_interval: float
    ignore: np.ndarray | None = None  # (H, W) bool at the source's resolution: never alarms


@dataclass
class Scored:
    """What one source gave."""

    name: str
    source: str
    live: bool
    frames: int = 0  # frames read
    dropped: int = 0  # frames dropped to catch up (live sources only)
    # Packed (8 bytes a frame, not a Python float's 32): a day at 25 frames/s is 35 MB.
    indices: array = field(default_factory=lambda: array("q"))
    scores: array = field(default_factory=lambda: array("d"))
    lags: array = field(default_factory=lambda: array("d"))
    events: list = field(default_factory=list)  # the `end` lines
    gaps: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    seconds: float = 0.0


def _percentiles(values) -> dict[str, float]:
    if not len(values):
        return {}
    p50, p95 = np.percentile(np.asarray(values), [50, 95])
    return {"p50": round(float(p50), 4), "p95": round(float(p95), 4)}


class SourceRun:
    """Scores one source (module docstring): its segment of the stream scorer, fusion, events,
    pictures and outputs. `latest` holds the last scored frame's picture inputs for viewers."""

    def __init__(self, run: "ScoreRun", source: Source):
        self.run, self.source = run, source
        self.result = Scored(source.name, source.uri, source.live)
        calib, alarms = run.calib, run.alarms
        self.fusion = OnlineFusion(FusionWeights.from_dict(calib["weights"]), StreamStats(calib["stats"]["mean"], calib["stats"]["std"]),
                                   float(calib["sigma"]))
        self.tracker = EventTracker(source.name, alarms.threshold, alarms.min_duration, alarms.merge_gap,
                                    alarms.update_interval, run.run_id, self._snapshot)
        self.ignore = downsample_mask(alarms.ignore, (run.size, run.size)) if alarms.ignore is not None else None
        self.segment = None
        self.waiting: dict[int, Frame] = {}  # frames in the current segment not scored yet, by local index
        self.local = 0  # the next frame's index in the current segment
        self.peak_picture = None  # (score, frame, image, map) of the open event's peak
        self.pictures: dict[int, tuple] = {}  # frame -> (image, map) of the frame being scored
        self.last: tuple | None = None  # (Frame, map, FrameScore) of the last scored frame
        self.last_flush = time.monotonic()
        self.domain_checked = False
        self.first_media: float | None = None

    # ------------------------------------------------------------------ pictures
    def picture(self, frame: Frame, amap, fs: FrameScore | None) -> np.ndarray:
        label = f"{self.source.name}  {frame.index}  {iso_time(frame.wall)[11:19]}"
        ignore = self.run.alarms.ignore
        if fs is None:
            return draw_frame(frame.image, None, np.inf, [], None, self.run.alarms.threshold, f"{label}  warming up",
                              ignore=ignore)
        return draw_frame(frame.image, amap, self.run.mapper.threshold, fs.boxes, fs.score, self.run.alarms.threshold, label,
                          alarm=fs.alarm, ignore=ignore)

    def _snapshot(self, kind: str, event_id: str, fs: FrameScore) -> str | None:
        if fs.frame in self.pictures:
            frame, amap = self.pictures[fs.frame]
        elif self.peak_picture is not None and self.peak_picture[1].index == fs.frame:
            _, frame, amap = self.peak_picture
        else:
            return None
        # One file per picture: a peak that moves on gets a new file, so a path once sent stays true.
        path = self.run.out / "snapshots" / f"{event_id}-{'new' if kind == 'new' else 'peak'}-{fs.frame:06d}.jpg"
        return str(write_jpeg(path, self.picture(frame, amap, fs)))

    # ------------------------------------------------------------------ scoring
    def _new_segment(self, background) -> None:
        self.background = background
        self.segment = self.run.scorer.stream(background)
        self.waiting, self.local = {}, 0

    def _add(self, frame: Frame, file: bool):
        """Add a frame to the segment; a file's canonical chunk it completes, if any."""
        if self.local >= INPUT_FRAMES:  # a segment's first frames are inputs only: never scored, never waiting
            self.waiting[self.local] = frame
        self.local += 1
        model = torch.from_numpy(frame_to_model_range(frame.image, (self.run.size, self.run.size)))
        if self.local <= INPUT_FRAMES and self.run.overlay is not None:  # inputs only: drawn as warming up
            self.run.overlay.add(self.picture(frame, None, None))
        if file:
            with self.run.lock:
                return self.segment.push(model)
        self.segment.add(model)
        return None

    def _emit(self, targets: list[int], inputs) -> None:
        run, r = self.run, self.result
        out = run.networks(inputs)  # one pass (with other cameras' clips, under mama serve, when they wait)
        streams = {k: out[k].cpu().numpy() for k in run.scorer.stream_names}
        amaps = run.mapper(out["error"].cpu().numpy(), out["damage"].cpu().numpy() if "damage" in out else None)
        now = time.monotonic()
        for j, t in enumerate(targets):
            frame = self.waiting.pop(t)
            row = {k: float(streams[k][j]) for k in run.scorer.stream_names}
            score = self.fusion.push(row)
            boxes, alarm = self._where(amaps[j], score, frame.image.shape[:2])
            fs = FrameScore(frame.index, frame.wall, frame.media_time, score, alarm, boxes)
            r.indices.append(frame.index)
            r.scores.append(score)
            lag = now - frame.arrived
            r.lags.append(lag)
            run.csv.writerow([self.source.name, frame.index, f"{frame.media_time:.3f}",
                              *(f"{row[k]:.9g}" for k in run.scorer.stream_names), f"{score:.9g}", int(alarm),
                              f"{lag:.3f}"])
            self.pictures = {frame.index: (frame, amaps[j])}
            if alarm and (self.peak_picture is None or score > self.peak_picture[0]):
                self.peak_picture = (score, frame, amaps[j])
            for line in self.tracker.push(fs):
                self._event(line)
            if self.tracker.open is None and not self.tracker.pending:
                self.peak_picture = None
            self.last = (frame, amaps[j], fs)
            if run.overlay is not None:
                run.overlay.add(self.picture(frame, amaps[j], fs))
            if self.first_media is None:
                self.first_media = frame.media_time
            if not self.domain_checked and frame.media_time - self.first_media >= DOMAIN_CHECK_SECONDS:
                self.check_domain()
        if now - self.last_flush >= FLUSH_SECONDS:
            run.csv_file.flush()
            self.last_flush = now
        run.progress(self)

    def _where(self, amap: np.ndarray, score: float, native: tuple[int, int]) -> tuple[list, bool]:
        """A frame's boxes and whether it alarms: above the threshold, unless everything unusual
        in it lies in the ignore mask (its regions above the map threshold, or, when none is,
        its hottest pixel). An alarm always says where: its regions, else its hottest region."""
        run = self.run
        boxes = regions(amap, run.mapper.threshold, native, self.ignore)
        if score <= run.alarms.threshold:
            return boxes, False
        if self.ignore is None or boxes:
            return boxes or [peak_region(amap, native)], True
        if regions(amap, run.mapper.threshold, native):  # every region lies in the mask
            return [], False
        if self.ignore.flat[int(np.argmax(amap))]:  # no region; its hottest pixel is in the mask
            return [], False
        return [peak_region(np.where(self.ignore, amap[~self.ignore].min(), amap), native)], True

    def _event(self, line: dict) -> None:
        self.run.log.write(line)
        if line["type"] == "end":
            self.result.events.append(line)

    def check_domain(self) -> None:
        """Scores far above the calibration from the start: a camera unlike the training footage."""
        self.domain_checked = True
        scores = np.asarray(self.result.scores)
        if scores.size and float(np.median(scores)) > self.run.alarms.threshold:
            text = (f"{self.source.name}: the median score of the first {len(scores)} frames, {np.median(scores):.2f}, is "
                    f"above the alarm threshold {self.run.alarms.threshold:.2f}: this camera looks unlike the footage the "
                    "model was trained on; train on this camera's normal footage, or recalibrate with --calibrate-on "
                    "NORMAL_VIDEO")
            self.result.warnings.append(text)
            print(f"warning: {text}", file=sys.stderr, flush=True)

    def _background(self, frames) -> tuple[list[Frame], torch.Tensor | None]:
        """The calibration's background, or a new camera's from its first frames (read here)."""
        stored = self.run.calib.get("background")
        if stored is not None or not self.run.scorer.extractor.needs_background:
            return [], stored
        warmup = list(itertools.islice(frames, WARMUP_FRAMES))
        if len(warmup) <= INPUT_FRAMES:
            raise MamaError(f"{self.source.uri}: {len(warmup)} frames; scoring needs at least {INPUT_FRAMES + 1}")
        model = np.stack([frame_to_model_range(f.image, (self.run.size, self.run.size)) for f in warmup])
        return warmup, torch.from_numpy(video_background(model))

    def score_file(self, stop: StopRequest) -> None:
        frames = (f for f in self.source.frames() if not stop.requested)
        warmup, background = self._background(frames)
        self._new_segment(background)
        for frame in itertools.chain(warmup, frames):
            self.result.frames += 1
            batch = self._add(frame, file=True)
            if batch is not None:
                self._emit(*batch)
        rest = self.segment.finish()  # what was read is scored, stopped or not
        while True:
            with self.run.lock:
                batch = next(rest, None)
            if batch is None:
                return
            self._emit(*batch)

    def score_live(self, stop: StopRequest) -> None:
        src: LiveSource = self.source
        src.start()

        def arrivals():
            while not stop.requested:
                items = src.drain(0.5)
                if not items and src.finished:
                    return
                yield from items

        warmup, background = self._background(f for f in arrivals() if isinstance(f, Frame))
        self._new_segment(background)
        for frame in warmup:
            self.result.frames += 1
            self._add(frame, file=False)
        b = self.run.o.batch_size
        while not stop.requested:
            # Whatever arrived; wait for more only when nothing is left to score.
            batch_items = src.drain(0.0 if self.segment.waiting > 0 else 0.2)
            for item in batch_items:
                if isinstance(item, Gap):
                    self._gap(item)
                else:
                    self.result.frames += 1
                    self._add(item, file=False)
            self._catch_up()
            with self.run.lock:
                batch = self.segment.take(b)
            if batch is not None:
                self._emit(*batch)
            elif src.finished and not src.queue:
                break
        self._score_waiting()  # what was read is scored (or dropped, if it is too late)

    def _score_waiting(self) -> None:
        """Score what waits in the segment, under the same drop policy as the live loop."""
        while True:
            self._catch_up()
            with self.run.lock:
                batch = self.segment.take(self.run.o.batch_size)
            if batch is None:
                return
            self._emit(*batch)

    def _catch_up(self) -> None:
        """More than --max-lag behind: drop the waiting frames but the newest clip."""
        if not self.waiting or len(self.waiting) <= DROP_KEEP:
            return
        oldest = min(self.waiting)
        if time.monotonic() - self.waiting[oldest].arrived <= self.run.o.max_lag:
            return
        order = sorted(self.waiting)
        keep = [self.waiting[i] for i in order[-DROP_KEEP:]]
        self.result.dropped += len(order) - DROP_KEEP
        self._new_segment(self.background)
        for frame in keep:
            self._add(frame, file=False)

    def _gap(self, gap: Gap) -> None:
        """A live source dropped (and came back, or not): end what is open, log the gap, and
        start a new segment (the frames before and after it are not one clip)."""
        last = self.last[2] if self.last is not None else None
        for line in self.tracker.close(last):
            self._event(line)
        line = {"type": "gap", "id": f"{self.run.run_id}-{self.source.name}-gap{len(self.result.gaps) + 1:03d}",
                "source": self.source.name, "frame": gap.after_frame, "time": iso_time(gap.wall),
                "seconds": round(gap.seconds, 3), "attempts": gap.attempts, "recovered": gap.recovered}
        self.result.gaps.append(line)
        self.run.log.write(line)
        self._score_waiting()
        self._new_segment(self.background)
        self.fusion.restart()

    def score(self, stop: StopRequest) -> Scored:
        t0 = time.monotonic()
        try:
            if self.source.live:
                self.score_live(stop)
            else:
                self.score_file(stop)
        finally:
            self.source.close()
            self.run.csv_file.flush()
        r = self.result
        if r.frames <= INPUT_FRAMES and not stop.requested:
            raise MamaError(f"{self.source.uri}: {r.frames} frames; scoring needs at least {INPUT_FRAMES + 1}")
        for line in self.tracker.close(self.last[2] if self.last is not None else None):
            self._event(line)
        if not self.domain_checked and len(r.scores) >= 10:
            self.check_domain()
        r.seconds = time.monotonic() - t0
        return r


class ScoreRun:
    """Everything one `mama score` shares across its sources, checked before anything is written."""

    def __init__(self, o: ScoreOptions, echo: bool = True, shared: "SharedScorers | None" = None):
        self.o, self.echo = o, echo  # echo: event lines on standard output too
        self.out = Path(o.out)  # it and --overlay were checked with the options (ScoreOptions)
        if o.webhook is not None:
            check_webhook(o.webhook)
        earlier = [n for n in OUTPUT_FILES if (self.out / n).exists()]
        if earlier and not o.append:
            raise MamaError(f"--out {self.out} holds an earlier run's {earlier[0]}; give another --out, or --append to "
                            "add this run after it")
        payload, make_scorer = _read_checkpoint(o)
        if shared is None:
            (self.scorer, self.size), self.lock = make_scorer(), threading.Lock()
            self.networks = BatchedNetworks(self.scorer)  # one camera: every pass is its own
        else:  # mama serve: one copy of the networks per checkpoint and settings, shared by its cameras
            key = (str(Path(o.checkpoint).resolve()), o.engine, o.device, o.batch_size, o.amp, o.compile,
                   str(o.motion_weights), str(o.label_weights))
            self.scorer, self.size, self.lock, self.networks = shared.get(key, make_scorer)
        self.sources = open_sources(o.input, o.camera, o.reconnect, o.fps)
        if o.overlay is not None and len(self.sources) != 1:
            for s in self.sources:
                s.close()
            raise MamaError(f"--overlay writes one video, but {o.input} holds {len(self.sources)}; score one video file "
                            "or frame folder")
        try:
            self.calib = self._calibration(payload)
            self.alarms = self._alarms()
            for source in self.sources:  # before anything is written
                if self.alarms.ignore is not None and self.alarms.ignore.shape != tuple(source.native):
                    h, w = self.alarms.ignore.shape
                    raise MamaError(f"--ignore {o.ignore}: {w}x{h} pixels, but {source.uri} is {source.native[1]}x"
                                    f"{source.native[0]}; draw the mask on a frame of this source")
        except BaseException:
            for s in self.sources:
                s.close()
            raise
        # Once the inputs are known good (a user's mistake stays one line): the fusion it calibrated leaves them out.
        for flag in (payload.get("card") or {}).get("flags", []):
            print(f"warning: model card: {flag}", file=sys.stderr, flush=True)
        self.mapper = self._mapper()
        if o.append:
            self._check_append()
        self.run_id = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        self.overlay = None
        self.bar = None
        self.tasks: dict[str, int] = {}
        self.listeners: list = []  # called with each SourceRun after each scored batch (mama serve)
        self.event_listeners: list = []  # called with each event line (mama serve)
        self.stop: StopRequest | None = None  # while run() runs: request() stops it from another thread

    def _check_append(self) -> None:
        """--append: an earlier scores.csv must have this run's columns (the same model's streams)."""
        if (self.out / "scores.csv").exists():
            with open(self.out / "scores.csv") as f:
                header = f.readline().strip().split(",")
            if header != self.csv_header:
                for s in self.sources:
                    s.close()
                raise MamaError(f"--append: {self.out / 'scores.csv'} has the columns {','.join(header)}, this run writes "
                                f"{','.join(self.csv_header)} (another model); give another --out")

    @property
    def csv_header(self) -> list[str]:
        return ["video", "frame", "media_time", *self.scorer.stream_names, "score", "alarm", "lag"]

    def _calibration(self, payload: dict) -> dict:
        o = self.o
        calib = payload.get("calibration")
        if o.calibrate_on is not None:
            videos = make_folder_samples(o.calibrate_on)
            if calib is not None:
                weights = FusionWeights.from_dict(calib["weights"])
            else:
                meta = run_meta(payload, o.checkpoint)
                weights = clean_weights(meta["motion"], meta["labels"])
            print(f"calibrating on {o.calibrate_on} ({len(videos)} video(s))", file=sys.stderr, flush=True)
            with self.lock:
                fresh = calibrate(self.scorer, videos, self.size, weights)
            return fresh
        if calib is None:
            raise MamaError(f"{o.checkpoint} has no calibration (alarm threshold, stream statistics); use a final.pt/best.pt "
                            "written by `mama train`, or give --calibrate-on NORMAL_VIDEO from this camera")
        for key in ("threshold", "sigma"):
            value = calib.get(key)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or (key == "sigma" and value < 0):
                raise MamaError(f"{o.checkpoint}: its calibration's {key} is {value!r}, which cannot be used; recalibrate "
                                "with --calibrate-on NORMAL_VIDEO or retrain")
        return calib

    def _alarms(self) -> Alarms:
        o, calib = self.o, self.calib
        if o.threshold is not None:
            threshold, origin = o.threshold, "--threshold"
        elif o.false_alarms_per_hour is not None:
            if "normal_scores" not in calib:
                raise MamaError(f"--false-alarms-per-hour: {o.checkpoint} keeps no scores of normal footage (an older "
                                "checkpoint); give --calibrate-on NORMAL_VIDEO from this camera")
            seqs = [np.asarray(s, dtype=np.float64) for s in calib["normal_scores"]]
            fps = [f or self.sources[0].fps or o.fps or DEFAULT_FPS for f in calib.get("fps", [None] * len(seqs))]
            threshold, hours = threshold_for_rate(seqs, fps, o.false_alarms_per_hour, o.min_duration, o.merge_gap)
            origin = (f"--false-alarms-per-hour {o.false_alarms_per_hour:g} on {hours * 60:.1f} minutes of normal footage")
            print(f"alarm threshold {threshold:.3f}: {origin}"
                  + ("" if hours >= 1 else " (under an hour: with so little footage the rate is a bound, not a "
                     "measurement; calibrate on more with --calibrate-on)"), file=sys.stderr, flush=True)
        else:
            threshold, origin = default_threshold(calib)
        ignore = None
        if o.ignore is not None:
            if not o.ignore.exists():
                raise MamaError(f"--ignore {o.ignore}: not found; give a PNG at the source's resolution, white where "
                                "alarms are never raised")
            image = cv2.imread(str(o.ignore), cv2.IMREAD_GRAYSCALE) if o.ignore.is_file() else None
            if image is None:
                raise MamaError(f"--ignore {o.ignore}: cannot read this image; give a PNG at the source's resolution, "
                                "white where alarms are never raised")
            ignore = image > 127
            if not ignore.any() or ignore.all():
                raise MamaError(f"--ignore {o.ignore}: {'no pixel is' if not ignore.any() else 'every pixel is'} white, so "
                                f"it {'ignores nothing' if not ignore.any() else 'would silence every alarm'}; paint white "
                                "only where alarms are never wanted")
        return Alarms(float(threshold), origin, o.min_duration, o.merge_gap, o.update_interval, ignore)

    def _mapper(self) -> AnomalyMapper:
        maps = self.calib.get("maps")
        if maps is None:  # an older checkpoint: maps normalised by their frame-wide statistics
            print("warning: this checkpoint has no per-pixel calibration; boxes come from the raw error map "
                  "(retrain, or give --calibrate-on NORMAL_VIDEO)", file=sys.stderr, flush=True)
            return _UncalibratedMapper()
        return AnomalyMapper({"stats": {k: {s: np.asarray(v) for s, v in d.items()} for k, d in maps["stats"].items()},
                              "weights": maps["weights"], "threshold": float(maps["threshold"])})

    def progress(self, sr: SourceRun) -> None:
        for listener in self.listeners:
            listener(sr)
        if self.bar is None:
            return
        r = sr.result
        rate = len(r.scores) / max(time.monotonic() - self.t0, 1e-9)
        backlog = sr.segment.waiting if sr.source.live else 0
        info = f"{rate:.1f} frames/s, lag {np.median(r.lags[-50:]):.2f} s"
        if sr.source.live:
            info += f", backlog {backlog}, dropped {r.dropped}"
        self.bar.update(self.tasks[sr.source.name], completed=r.frames, info=info)

    def run(self) -> dict:
        o, out = self.o, self.out
        summary = {"input": str(o.input if o.camera is None else f"camera {o.camera}"), "checkpoint": str(o.checkpoint),
                   "run": self.run_id, "protocol": "online", "threshold": self.alarms.threshold,
                   "threshold_from": self.alarms.threshold_from, "min_duration": o.min_duration,
                   "merge_gap": o.merge_gap, "weights": self.calib["weights"], "batch_size": o.batch_size, "videos": []}
        results: list[Scored] = []
        stopped = None
        with output_folder(out):
            rows = _line_count(out / "scores.csv")
            webhook = Webhook(o.webhook) if o.webhook is not None else None
            with open(out / "scores.csv", "a", newline="") as self.csv_file, \
                    open(out / "events.jsonl", "a") as events_file, \
                    Progress(TextColumn("[bold]{task.description}"), TextColumn("{task.completed} frames"),
                             TextColumn("{task.fields[info]}"), TimeElapsedColumn(), transient=True,
                             disable=not (self.echo and sys.stderr.isatty()), redirect_stdout=False, redirect_stderr=False) as self.bar:
                self.csv = csv.writer(self.csv_file)
                if rows == 0:
                    self.csv.writerow(self.csv_header)
                self.log = EventLog(events_file, webhook, echo=self.echo)
                self.log.listeners.extend(self.event_listeners)
                self.log.write({"type": "run", "run": self.run_id, "time": iso_time(time.time()), "input": summary["input"],
                                "checkpoint": str(o.checkpoint), "threshold": self.alarms.threshold,
                                "first_row": rows + 1 if rows else 2}, public=False)
                self.overlay = (OverlayVideo(o.overlay, self.sources[0].fps or o.fps or DEFAULT_FPS)
                                if o.overlay is not None else None)
                self.t0 = time.monotonic()
                try:
                    with StopRequest(force_on_second=False) as stop:
                        self.stop = stop
                        for source in self.sources:
                            self.tasks[source.name] = self.bar.add_task(source.name, total=None, info="")
                            results.append(SourceRun(self, source).score(stop))
                            if stop.requested:
                                break
                        stopped = stop.requested
                finally:
                    for source in self.sources:
                        source.close()
                    if self.overlay is not None:
                        self.overlay.close(ok=bool(results))
                    if webhook is not None:
                        webhook.close()
            summary["videos"] += [_video_summary(r) for r in results]
            summary["event_lines"] = dict(self.log.count)
            summary["webhook"] = webhook.summary() if webhook is not None else None
            summary["interrupted"] = stopped is not None
            summary["stopped_by"] = stopped
            self._write_summary(summary, results)
        return summary

    def _write_summary(self, summary: dict, results: list[Scored]) -> None:
        """scores.json (after the earlier runs' summaries, with --append) and each source's plot."""
        out = self.out
        if (out / "scores.json").exists():  # --append: the earlier runs' summaries are kept
            earlier = json.loads((out / "scores.json").read_text())
            summary["earlier_runs"] = earlier.pop("earlier_runs", []) + [earlier]
        with atomic_path(out / "scores.json") as tmp:
            tmp.write_text(json.dumps(summary, indent=1))
        for r in results:
            if r.scores:
                _plot(out / f"scores_{r.name}.png", r, self.alarms.threshold)


def _read_checkpoint(o: ScoreOptions) -> tuple[dict, Callable[[], tuple[Scorer, int]]]:
    """The checkpoint's payload (of an export: its calibration only) and what makes its scorer
    and frame size (called once per process and settings: SharedScorers)."""
    if o.engine == "onnxruntime":
        export = read_export(o.checkpoint)
        return {"calibration": export.calibration}, lambda: (scorer_from_export(export, o.batch_size), export.size)
    if (Path(o.checkpoint) / EXPORT_FILE).is_file():
        raise MamaError(f"--checkpoint {o.checkpoint} is an ONNX export (mama export); add --engine onnxruntime, "
                        "or pass the run's final.pt")
    payload = read_file(o.checkpoint, "run")

    def make_scorer() -> tuple[Scorer, int]:
        net_g, net_a, meta = models_from_run(payload, o.checkpoint, need_destroyer=False)
        dev = pick_device(o.device)
        extractor = build_extractor(meta["motion"], meta["labels"], dev, o.motion_weights, o.label_weights)
        return Scorer(net_g.to(dev).eval(), extractor, net_a.to(dev).eval() if net_a is not None else None,
                      dev, batch_size=o.batch_size, amp=o.amp, compile=o.compile), int(meta["size"])

    return payload, make_scorer


class SharedScorers:
    """The networks of the runs of one process (mama serve), loaded once per checkpoint and
    settings; each comes with the lock its runs take for feature work, and a BatchedNetworks
    through which their network passes go."""

    def __init__(self):
        self._lock = threading.Lock()
        self._made: dict = {}

    def get(self, key, make) -> tuple:
        with self._lock:
            if key not in self._made:
                scorer, size = make()
                self._made[key] = (scorer, size, threading.Lock(), BatchedNetworks(scorer))
            return self._made[key]


class BatchedNetworks:
    """One network pass for the clips of several cameras when they wait for it together: a
    camera that finds the networks busy leaves its clips; whoever runs next takes every clip
    left by then, in one batch, and hands each camera its rows. An idle camera's clips go at
    once (no waiting to fill a batch), so batches across cameras form exactly when that pays:
    when the networks are the bottleneck."""

    def __init__(self, scorer: Scorer):
        self.scorer = scorer
        self.cond = threading.Condition()
        self.pending: list[dict] = []
        self.busy = False
        self.batches = self.clips = 0  # passes run, clips scored (their ratio: clips per pass)

    def __call__(self, inputs) -> dict:
        request = {"inputs": inputs, "out": None}
        with self.cond:
            self.pending.append(request)
            while request["out"] is None and self.busy:
                self.cond.wait()
            if request["out"] is not None:  # another camera's pass scored these clips
                return request["out"]
            self.busy, taken, self.pending = True, self.pending, []
        try:
            outputs = self._run([r["inputs"] for r in taken])
        except BaseException:
            with self.cond:
                self.busy = False
                self.pending = [r for r in taken if r is not request] + self.pending
                self.cond.notify_all()
            raise
        with self.cond:
            for r, out in zip(taken, outputs):
                r["out"] = out
            self.busy = False
            self.cond.notify_all()
        return request["out"]

    def _run(self, batches: list) -> list[dict]:
        sizes = [len(b[0]) for b in batches]
        if len(batches) == 1:  # alone: no copy into a joint batch
            outputs = [self.scorer.clip_outputs(*batches[0], maps=True)]
        else:
            joined = [None if parts[0] is None else torch.cat(parts) for parts in zip(*batches)]
            pieces = {k: torch.split(v, sizes) for k, v in self.scorer.clip_outputs(*joined, maps=True).items()}
            outputs = [{k: v[i] for k, v in pieces.items()} for i in range(len(sizes))]
        self.batches, self.clips = self.batches + 1, self.clips + sum(sizes)
        return outputs


def _video_summary(r: Scored) -> dict:
    """One source's entry of scores.json's "videos"."""
    return {"video": r.name, "source": r.source, "live": r.live, "frames": r.frames, "dropped": r.dropped,
            "frames_scored": len(r.scores), "first_scored_frame": int(r.indices[0]) if r.indices else None,
            "scores": [round(float(s), 7) for s in r.scores], "events": r.events, "gaps": r.gaps,
            "warnings": r.warnings, "frames_per_second": round(len(r.scores) / max(r.seconds, 1e-9), 2),
            "lost": bool(r.gaps) and not r.gaps[-1]["recovered"],
            "lag_seconds": _percentiles(r.lags)}


def _line_count(path: Path) -> int:
    if not path.exists():
        return 0
    with open(path) as f:
        return sum(1 for _ in f)


class _UncalibratedMapper:
    """An older checkpoint's maps: the error map in z-units of its own frame (no per-pixel
    statistics were stored), boxed above 4 (a rough rule, said in a warning)."""

    threshold = 4.0

    def __call__(self, error: np.ndarray, damage: np.ndarray | None = None) -> np.ndarray:
        e = np.asarray(error, dtype=np.float32)
        mean, std = e.mean(axis=(1, 2), keepdims=True), e.std(axis=(1, 2), keepdims=True) + 1e-6
        return np.stack([cv2.GaussianBlur(c, (0, 0), 1.0) for c in (e - mean) / std])


def score_videos(o: ScoreOptions) -> dict:
    """Score every input source; the summary written to scores.json ("interrupted" when a
    signal stopped it: what was read is scored and written)."""
    return ScoreRun(o).run()


def _plot(path: Path, r: Scored, threshold: float) -> None:
    fig, ax = plt.subplots(figsize=(8, 2.4))
    x = np.asarray(r.indices)
    ax.plot(x, np.asarray(r.scores), lw=1, label="score")
    ax.axhline(threshold, color="red", lw=0.8, ls="--", label="alarm threshold")
    for e in r.events:
        ax.axvspan(e["start_frame"], e["end_frame"], color="orange", alpha=0.3, lw=0)
    ax.set_xlabel("frame")
    ax.set_title(f"{r.name}: online anomaly score ({len(r.events)} events)", fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
