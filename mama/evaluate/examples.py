"""What `mama score` would have done on the test videos, for the report: each video's online
score with the checkpoint's own calibration (weights, statistics, causal smoothing), the
alarm threshold it uses when given none, the events under its default event rules, and three
frames to look at with their anomaly map: the most anomalous normal frame (the worst false
alarm), the most and the least anomalous abnormal frames (the clearest catch, the worst
miss). The test labels choose only which frames are shown, never a threshold."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mama.config import ScoreOptions
from mama.data.datasets import VideoRecord, decode_video_frame
from mama.evaluate.alarms import default_threshold, offline_events
from mama.config import ONLINE_SIGMA
from mama.evaluate.calibrate import effective_weights
from mama.evaluate.engine import Scorer
from mama.evaluate.fusion import FusionWeights, StreamStats, fuse_online
from mama.evaluate.maps import AnomalyMapper, regions
from mama.evaluate.streams import scoring_inputs
from mama.features.clips import INPUT_FRAMES

# `mama score`'s own defaults, so the report's alarms are the ones it would raise.
MIN_DURATION, MERGE_GAP = ScoreOptions.min_duration, ScoreOptions.merge_gap


@dataclass
class Example:
    """One frame shown in the report, drawn as `mama score` draws it."""

    what: str  # why it is shown, in words
    video: int  # index in the test videos
    index: int  # index in the video's scores (its frame is index + INPUT_FRAMES)
    score: float
    abnormal: bool
    image: np.ndarray | None = None  # uint8 BGR at the video's own size
    amap: np.ndarray | None = None  # the anomaly map at the model's size (None: no map calibration)
    map_threshold: float = float("inf")
    boxes: list | None = None


@dataclass
class Watch:
    threshold: float
    threshold_from: str
    quantile: float | None  # of the online score over normal frames that the threshold is
    scores: list[np.ndarray]  # per video, aligned with the labels
    events: list[list[tuple[int, int]]]  # per video, (first, last) indices into its scores
    examples: list[Example]

    def summary(self, videos: list[VideoRecord]) -> dict:
        """What metrics.json keeps of it (frames 0-based in the video)."""
        return {
            "score": "online, with the checkpoint's calibration (what `mama score` computes)",
            "threshold": self.threshold, "threshold_from": self.threshold_from,
            "min_duration": MIN_DURATION, "merge_gap": MERGE_GAP,
            "events": [{"video": v.name, "first_frame": s + INPUT_FRAMES, "last_frame": e + INPUT_FRAMES}
                       for v, ev in zip(videos, self.events) for s, e in ev],
            "examples": [{"what": x.what, "video": videos[x.video].name, "frame": x.index + INPUT_FRAMES,
                          "score": x.score, "abnormal": x.abnormal} for x in self.examples],
        }


def pick_examples(scores: list[np.ndarray], labels: list[np.ndarray]) -> list[Example]:
    """The most anomalous normal frame, the most and the least anomalous abnormal frames."""
    flat_s, flat_l = np.concatenate(scores), np.concatenate(labels).astype(bool)
    where = np.concatenate([np.stack([np.full(len(s), i), np.arange(len(s))], 1) for i, s in enumerate(scores)])
    normal, abnormal = np.flatnonzero(~flat_l), np.flatnonzero(flat_l)
    picks = [("most anomalous normal frame", normal[np.argmax(flat_s[normal])]),
             ("most anomalous abnormal frame", abnormal[np.argmax(flat_s[abnormal])]),
             ("least anomalous abnormal frame", abnormal[np.argmin(flat_s[abnormal])])]
    return [Example(what, int(where[k, 0]), int(where[k, 1]), float(flat_s[k]), bool(flat_l[k])) for what, k in picks]


def watch(calib: dict, scorer: Scorer, videos: list[VideoRecord], streams: list[dict], labels: list[np.ndarray],
          size: int, background: np.ndarray | None) -> Watch:
    """The online scores, threshold, events and example frames (module docstring); `streams`
    scored against `background`, as the online protocol does."""
    w = effective_weights(FusionWeights.from_dict(calib["weights"]), streams[0])
    stats = StreamStats(calib["stats"]["mean"], calib["stats"]["std"])
    scores = [fuse_online(s, w, stats, calib.get("sigma", ONLINE_SIGMA)) for s in streams]
    threshold, origin = default_threshold(calib)
    events = [offline_events(s, threshold, MIN_DURATION, MERGE_GAP) for s in scores]
    examples = pick_examples(scores, labels)
    mapper = AnomalyMapper(calib["maps"]) if "maps" in calib else None
    for x in examples:
        x.image = decode_video_frame(videos[x.video], x.index + INPUT_FRAMES)
        if mapper is not None:
            x.amap = frame_map(scorer, mapper, videos[x.video], x.index + INPUT_FRAMES, size, background)
            x.map_threshold = mapper.threshold
            x.boxes = regions(x.amap, mapper.threshold, x.image.shape[:2])
    return Watch(threshold, origin, calib.get("quantile"), scores, events, examples)


def frame_map(scorer: Scorer, mapper: AnomalyMapper, video: VideoRecord, frame: int, size: int, background) -> np.ndarray:
    """The anomaly map of one frame, from its video's canonical batches (the same bits as a
    whole-video score), read no further than the batch that holds it."""
    frames, bg, key = scoring_inputs(scorer, video, size, background)
    for targets, error, damage in scorer.video_maps(frames, bg, key, size):
        if frame in targets:
            j = targets.index(frame)
            return mapper(error[j:j + 1], None if damage is None else damage[j:j + 1])[0]
    raise ValueError(f"frame {frame} of {video.name} was not scored")
