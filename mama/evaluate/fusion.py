"""From per-frame score streams to one anomaly score per frame (docs/design.md).

Streams (each one value per predicted frame, higher = more anomalous):
  sim_motion, sim_label   the generator's two triplet "sim losses" at the bottleneck
  sse                     the generator's prediction error (MSE on [0, 1]-rescaled frames)
  destroyer_sse           the destroyer output's error against the real frame
Two normalisations:
  offline (the reference code's): per video, z-score each stream, fuse with weights,
      min-max scale, optionally Gaussian-smooth. A frame's score depends on the whole video.
  online (causal): z-score each stream with statistics of the NORMAL training videos, fuse,
      smooth with a one-sided (causal) Gaussian. A frame's score never depends on later frames.
"""
from __future__ import annotations

import collections
import itertools
import math
from dataclasses import dataclass
from collections.abc import Mapping, Sequence

import numpy as np
from scipy.ndimage import gaussian_filter1d
from scipy.stats import rankdata


# The score streams, in their order everywhere: a weight's place on the command line ('a,b,c,d'), its
# letter in the files written, a report's columns.
STREAMS = ("sim_motion", "sim_label", "sse", "destroyer_sse")
GENERATOR_STREAMS = STREAMS[:3]
_LETTERS = dict(zip(STREAMS, "abcd"))  # a weight's key in the files written (calibration["weights"])


class FusionWeights(Mapping[str, float]):
    """Score = the sum over STREAMS of weight * normalised stream: a read-only mapping from each
    stream of STREAMS to its weight (0: left out). Built from weights in STREAMS' order,
    `FusionWeights(1, 1, 3, 1)`, or by stream name, `FusionWeights(sse=1)`: a stream not given
    weighs 0. Written 'a,b,c,d' on the command line (`parse`, `str`) and {'a': .., 'b': .., 'c': ..,
    'd': ..} in checkpoints (`as_dict`, `from_dict`)."""

    __slots__ = ("_w",)

    def __init__(self, *values: float, **by_stream: float):
        unknown = set(by_stream) - set(STREAMS)
        if len(values) > len(STREAMS) or unknown:
            raise TypeError(f"fusion weights take at most {len(STREAMS)} values or the streams {', '.join(STREAMS)}, "
                            f"got {values} {sorted(unknown)}")
        given = dict(zip(STREAMS, values)) | by_stream
        self._w = tuple(float(given.get(n, 0.0)) for n in STREAMS)

    @classmethod
    def parse(cls, text: str) -> "FusionWeights":
        """'a,b,c' or 'a,b,c,d' as given on the command line."""
        try:
            values = [float(v) for v in text.split(",")]
        except ValueError:
            values = []
        if len(values) not in (3, 4):
            raise ValueError(f"--weights takes 3 or 4 comma-separated numbers (a,b,c[,d]), got {text!r}")
        if not all(math.isfinite(v) and v >= 0 for v in values) or not any(values):
            raise ValueError(f"--weights {text}: the weights must be finite, >= 0 and not all zero, e.g. --weights 1,1,3,1")
        return cls(*values)

    @classmethod
    def from_dict(cls, stored: Mapping[str, float]) -> "FusionWeights":
        """The weights `as_dict` wrote (a checkpoint's calibration["weights"])."""
        return cls(**{n: stored[k] for n, k in _LETTERS.items() if k in stored})

    def as_dict(self) -> dict[str, float]:
        return {_LETTERS[n]: w for n, w in self.items()}

    def without(self, *streams: str) -> "FusionWeights":
        """These weights with `streams` left out."""
        return FusionWeights(**{n: w for n, w in self.items() if n not in streams})

    def without_destroyer(self) -> "FusionWeights":
        return self.without("destroyer_sse")

    def __getitem__(self, stream: str) -> float:
        return self._w[STREAMS.index(stream)]

    def __iter__(self):
        return iter(STREAMS)

    def __len__(self) -> int:
        return len(STREAMS)

    def __eq__(self, other) -> bool:
        return isinstance(other, FusionWeights) and self._w == other._w

    def __hash__(self) -> int:
        return hash(self._w)

    def __repr__(self) -> str:
        return f"FusionWeights({', '.join(f'{n}={w:g}' for n, w in self.items())})"

    def __str__(self) -> str:
        return ",".join(f"{w:g}" for w in self._w)


# The paper protocol's fusion. Fixed in advance, never looked up on test labels, and inside the
# reference's own search family (a + b + c = 5, d in {0.25, 0.5, 0.75, 1}), so the figure is one
# the reference could have reported: prediction error carries most of the signal in every
# frame-prediction detector (c = 3), the two bottleneck terms refine it (a = b = 1), and the
# destroyer's error gets the largest weight that family allows (d = 1).
PAPER_WEIGHTS = FusionWeights(sim_motion=1.0, sim_label=1.0, sse=3.0, destroyer_sse=1.0)


def clean_weights(motion: str, labels: str) -> FusionWeights:
    """The clean protocol's (and `mama score`'s) default fusion, fixed in advance: the paper's,
    except that a bottleneck term weighs in only when its features come from the pretrained
    network the paper uses (FlowNet2, DeepLabv3). From the weight-free stand-ins (DIS flow,
    foreground labels) the terms carry no semantics and the per-video z-score weighs their noise
    as much as the prediction error's signal (README, "Why the sim terms hurt at this size")."""
    from mama.features.registry import LABELS, MOTION  # the providers' table: needs weights or not

    learned = lambda table, name: bool(table.get(name, (None, False))[1])  # noqa: E731
    return PAPER_WEIGHTS.without(*(["sim_motion"] if not learned(MOTION, motion) else []),
                                 *(["sim_label"] if not learned(LABELS, labels) else []))


# scipy's gaussian_filter1d default: the reference smooths each video's scores with it.
SMOOTHING_MODE = "reflect"


def zscore(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    std = x.std()
    return (x - x.mean()) / std if std > 0 else np.zeros_like(x)


def minmax(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    span = x.max() - x.min()
    return (x - x.min()) / span if span > 0 else np.zeros_like(x)


class CausalSmoother:
    """The past half of a Gaussian (weights renormalised over the values seen): push one value,
    get its smoothed value; nothing later than it is used. `causal_gaussian` is this over an array."""

    def __init__(self, sigma: float):
        radius = int(math.ceil(3 * sigma)) if sigma > 0 else 0
        self.kernel = np.exp(-0.5 * (np.arange(radius + 1) / sigma) ** 2) if sigma > 0 else np.ones(1)  # k[j] weighs x[t - j]
        self.past: collections.deque[float] = collections.deque(maxlen=radius + 1)

    def push(self, x: float) -> float:
        self.past.appendleft(float(x))
        k = self.kernel[: len(self.past)]
        return float(np.dot(k, np.fromiter(self.past, np.float64, len(self.past))) / k.sum())


def causal_gaussian(x: np.ndarray, sigma: float) -> np.ndarray:
    """Smooth with the past half of a Gaussian (weights renormalised): no look-ahead."""
    x = np.asarray(x, dtype=np.float64)
    if sigma <= 0 or x.size == 0:
        return x.copy()
    smoother = CausalSmoother(sigma)
    return np.array([smoother.push(v) for v in x])


def _weighted(streams: dict[str, np.ndarray], weights: FusionWeights, norm) -> np.ndarray:
    total = None
    for name, w in weights.items():
        if w == 0.0:
            continue
        if name not in streams:
            raise ValueError(f"fusion weight for {name} is {w:g} but that stream was not computed")
        term = w * norm(name, np.asarray(streams[name], dtype=np.float64))
        total = term if total is None else total + term
    if total is None:
        raise ValueError("all fusion weights are zero")
    return total


def fuse_offline(streams: dict[str, np.ndarray], weights: FusionWeights, sigma: float = 0.0) -> np.ndarray:
    """The reference code's fusion for ONE video: per-video z-score, weights, min-max, smoothing."""
    fused = minmax(_weighted(streams, weights, lambda _, x: zscore(x)))
    return gaussian_filter1d(fused, sigma, mode=SMOOTHING_MODE) if sigma > 0 else fused


@dataclass(frozen=True)
class StreamStats:
    """Mean and standard deviation of each stream over normal (training) frames."""

    mean: dict[str, float]
    std: dict[str, float]

    @classmethod
    def from_streams(cls, videos: Sequence[dict[str, np.ndarray]]) -> "StreamStats":
        names = [n for n in STREAMS if all(n in v for v in videos)]
        mean, std = {}, {}
        for n in names:
            x = np.concatenate([np.asarray(v[n], dtype=np.float64) for v in videos])
            mean[n], std[n] = float(x.mean()), float(x.std() or 1.0)
        return cls(mean, std)

    def as_dict(self) -> dict:
        return {"mean": self.mean, "std": self.std}


def _online_norm(stats: StreamStats):
    def norm(name: str, x: np.ndarray) -> np.ndarray:
        if name not in stats.mean:
            raise ValueError(f"no training statistics for stream {name}; recalibrate the checkpoint")
        return (x - stats.mean[name]) / stats.std[name]

    return norm


def fuse_online(
    streams: dict[str, np.ndarray], weights: FusionWeights, stats: StreamStats, sigma: float = 0.0
) -> np.ndarray:
    """Causal fusion: z-scores from training statistics, weights, causal smoothing."""
    return causal_gaussian(_weighted(streams, weights, _online_norm(stats)), sigma)


class OnlineFusion:
    """`fuse_online` a frame at a time, the same numbers: push a frame's streams, get its score."""

    def __init__(self, weights: FusionWeights, stats: StreamStats, sigma: float = 0.0):
        self.weights, self.norm = weights, _online_norm(stats)
        self.smoother = CausalSmoother(sigma)

    def push(self, streams: dict[str, float]) -> float:
        one = {k: np.asarray([v], dtype=np.float64) for k, v in streams.items()}
        return self.smoother.push(_weighted(one, self.weights, self.norm)[0])

    def restart(self) -> None:
        """The stream broke (a live source dropped): smooth nothing across the break."""
        self.smoother.past.clear()


def oracle_grid(with_destroyer: bool) -> list[FusionWeights]:
    """The reference code's search grid: a in 0.1..4.8, b > 0, c = 5 - a - b > 0, d in {.25,..,1}."""
    steps = np.round(np.arange(1, 49) * 0.1, 1)
    grid = []
    ds = (0.25, 0.5, 0.75, 1.0) if with_destroyer else (0.0,)
    for a, b in itertools.product(steps, steps):
        c = round(5.0 - a - b, 1)
        if c > 0:
            grid.extend(FusionWeights(float(a), float(b), float(c), d) for d in ds)
    return grid


def rank_auc(scores: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """The AUC of each row of `scores` (G, N) for the frames where `positive` (N,) is True, from
    average ranks (the Mann-Whitney statistic): many weightings at once."""
    y = np.asarray(positive, dtype=bool)
    pos, neg = int(y.sum()), int((~y).sum())
    if pos == 0 or neg == 0:
        raise ValueError("an AUC needs both normal and abnormal frames")
    ranks = rankdata(scores, axis=1)
    return (ranks[:, y].sum(axis=1) - pos * (pos + 1) / 2) / (pos * neg)


def grid_aucs(videos: Sequence[dict[str, np.ndarray]], labels: Sequence[np.ndarray], grid: Sequence[FusionWeights],
              sigma: float = 0.0) -> np.ndarray:
    """Micro AUC of the offline fusion (`fuse_offline`) with each of `grid`'s weights, vectorised:
    z-scores once per video, all weightings as one matrix product, min-max per video."""
    w = np.array([list(g.values()) for g in grid])  # (G, len(STREAMS))
    used = [i for i, n in enumerate(STREAMS) if w[:, i].any()]
    parts = []
    for v in videos:
        z = np.stack([zscore(v[STREAMS[i]]) for i in used])  # (S, T)
        raw = w[:, used] @ z  # (G, T)
        lo, hi = raw.min(axis=1, keepdims=True), raw.max(axis=1, keepdims=True)
        fused = (raw - lo) / np.where(hi > lo, hi - lo, 1.0)
        parts.append(gaussian_filter1d(fused, sigma, axis=1, mode=SMOOTHING_MODE) if sigma > 0 else fused)
    return rank_auc(np.concatenate(parts, axis=1), np.concatenate(labels))


def search_weights(
    videos: Sequence[dict[str, np.ndarray]],
    labels: Sequence[np.ndarray],
    with_destroyer: bool,
    sigma: float = 0.0,
) -> tuple[FusionWeights, float]:
    """Best micro AUC over the reference grid. On test labels this is the `oracle` figure."""
    grid = oracle_grid(with_destroyer)
    auc = grid_aucs(videos, labels, grid, sigma)
    best = int(np.argmax(auc))
    return grid[best], float(auc[best])
