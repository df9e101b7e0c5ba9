"""Scoring: per-frame score streams of a video, live or on disk, each frame's features once.

For a video of T frames the generator predicts frames 4..T-1 (0-based) from the 4 before.
Frames go through one pipeline whether they come from a file, a camera or memory
(`StreamScorer`): they are taken in chunks of `batch_size` frames; when a chunk and the frame
after it are in, the chunk's labels and pair flows are computed (once, a FeatureStore keeps
them) and the clips whose targets lie in the chunk run through the generator (and destroyer)
as one batch. Memory holds a chunk's worth of frames and features, whatever the length; a
frame's score comes out at most a chunk + 1 frames after it. Scoring a whole video
(`video_streams`) is the same pipeline fed from memory, so the two give the same bits.

On CPU the networks run as inference copies (mama.models.inference: BatchNorm folded,
channels_last, Winograd 3x3 convolutions) made once when the Scorer is built, so the models
passed in are never modified (copies passed in are used as they are); `optimize=False` runs
the models as they are (`True` forces copies). `compile=True` runs the networks through
torch.compile (on CUDA with CUDA graphs: mama.runtime.compile_model). A video's streams stay
on the device until it ends, then come back in one transfer. The networks may also be ONNX
Runtime sessions called like them (mama.models.onnx; `mama export`, mama.evaluate.export), run
with `optimize=False`: the rest of the scoring is this same code.
"""
from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mama.config import SCORE_BATCH
from mama.features.clips import INPUT_FRAMES, ClipInputs
from mama.features.extractor import FeatureExtractor
from mama.evaluate.fusion import STREAMS
from mama.features.store import FeatureStore, ShardDir, feature_shards
from mama.models.inference import copies_pay, prepare_for_inference
from mama.models.scores import TRIPLET_MARGIN, bottleneck_sims, frame_sse
from mama.runtime import compile_model

MAP_NAMES = ("error", "damage")  # the per-pixel maps clip_outputs gives beside the streams


@dataclass
class Scorer:
    generator: nn.Module
    extractor: FeatureExtractor
    destroyer: nn.Module | None = None
    device: torch.device = torch.device("cpu")
    batch_size: int = SCORE_BATCH  # frames per chunk: features, then the clips ending in it
    margin: float = TRIPLET_MARGIN
    amp: bool = False  # bf16 autocast (CUDA)
    optimize: bool | None = None  # inference copies (module docstring); None: on CPU only
    feature_dir: Path | None = None  # a disk feature store (mama.features.store.ShardDir) for named videos
    compile: bool = False  # torch.compile the generator and destroyer (module docstring)

    def __post_init__(self) -> None:
        self.device = torch.device(self.device)
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.optimize is None:
            self.optimize = copies_pay(self.device)
        if self.optimize:
            self.generator = prepare_for_inference(self.generator, self.device)
            if self.destroyer is not None:
                self.destroyer = prepare_for_inference(self.destroyer, self.device)
            self.extractor = self.extractor.inference_copy(self.device)
        if self.compile:
            self.generator = compile_model(self.generator, self.device)
            if self.destroyer is not None:
                self.destroyer = compile_model(self.destroyer, self.device)
        if self.extractor.chunk != self.batch_size:
            self.extractor = copy.copy(self.extractor)
            self.extractor.chunk = self.batch_size

    @property
    def stream_names(self) -> list[str]:
        """The streams `clip_streams` gives, in their order of report."""
        absent = {"sim_label": self.extractor.labels is None, "destroyer_sse": self.destroyer is None}
        return [n for n in STREAMS if not absent.get(n, False)]

    def stream(self, background=None, key: str | None = None, size: int | None = None) -> "StreamScorer":
        """A scorer for one video whose frames arrive one at a time. With a `key` naming the video
        (and every frame it will have) and its frame `size`, its features are read from and
        written to the disk store under `feature_dir`, if any."""
        bg = None if background is None else torch.as_tensor(background, dtype=torch.float32).to(self.device)
        shards = None
        if key is not None and size is not None:
            shards = self._shards(size)
            if shards is not None and bg is not None:  # the labels may depend on the background
                key = f"{key}-bg{hashlib.sha1(bg.cpu().numpy().tobytes()).hexdigest()[:10]}"
        return StreamScorer(self, bg, key if shards is not None else None, shards)

    def _shards(self, size: int) -> ShardDir | None:
        ids = self.extractor.weights_id
        if self.feature_dir is None or ids is None:
            return None
        # Scoring runs the providers' inference copies, so its entries are kept apart from training's.
        return feature_shards(self.feature_dir, ids, size, self.batch_size, use="scoring", device=self.device.type,
                              inference_copies=bool(self.optimize))

    @torch.inference_mode()
    def video_streams(self, frames: np.ndarray | torch.Tensor, background=None) -> dict[str, np.ndarray]:
        """Streams (sim_motion, sim_label, sse[, destroyer_sse]) for targets 4..T-1 of one video."""
        frames = torch.as_tensor(frames, dtype=torch.float32)
        if frames.shape[0] <= INPUT_FRAMES:
            raise ValueError(f"a video needs more than {INPUT_FRAMES} frames to be scored, got {frames.shape[0]}")
        return self.frame_streams(frames, background)

    @torch.inference_mode()
    def frame_streams(self, frames: Iterable[torch.Tensor], background=None, key: str | None = None,
                      size: int | None = None, on_maps=None) -> dict[str, np.ndarray]:
        """The streams of a video whose frames (3, H, W) come one at a time (from a file, say);
        `key` and `size` as in `stream`. `on_maps`, if given, gets each batch's per-pixel maps
        ({"error", "damage"} as numpy, `clip_outputs`) from the same pass."""
        out: dict[str, list[torch.Tensor]] = {}
        for _, inputs in self.stream(background, key, size).batches(frames):
            result = self.clip_outputs(*inputs, maps=on_maps is not None)
            if on_maps is not None:
                on_maps({k: result.pop(k).cpu().numpy() for k in MAP_NAMES if k in result})
            for k, v in result.items():
                out.setdefault(k, []).append(v)
        if not out:
            raise ValueError(f"a video needs more than {INPUT_FRAMES} frames to be scored")
        return _to_host(out)

    @torch.inference_mode()
    def stored_streams(self, store: FeatureStore, video: int, frames: torch.Tensor) -> dict[str, np.ndarray]:
        """Streams for targets 4..T-1 of a video whose features `store` holds: only the networks run."""
        out: dict[str, list[torch.Tensor]] = {}
        for chunk in torch.arange(INPUT_FRAMES, frames.shape[0], device=self.device).split(self.batch_size):
            for k, v in self.clip_stream_tensors(*store.video_clip_inputs(video, frames, chunk)).items():
                out.setdefault(k, []).append(v)
        return _to_host(out)

    def clip_streams(self, x, flows, labels, target) -> dict[str, np.ndarray]:
        """Streams for a batch of assembled clips, on the host."""
        return _to_host({k: [v] for k, v in self.clip_stream_tensors(x, flows, labels, target).items()})

    def _batch_begins(self) -> None:
        if self.compile and self.device.type == "cuda":  # the last batch's graph outputs may be overwritten now
            torch.compiler.cudagraph_mark_step_begin()

    def clip_stream_tensors(self, x, flows, labels, target) -> dict[str, torch.Tensor]:
        """Streams for a batch of assembled clips, float32 on the device."""
        return self.clip_outputs(x, flows, labels, target, maps=False)

    def clip_outputs(self, x, flows, labels, target, maps: bool = True) -> dict[str, torch.Tensor]:
        """One pass of the networks over a batch of clips: the streams (B,) and, with `maps`, the
        per-pixel maps (B, H, W) "error" = |prediction - frame| and "damage" = |destroyed -
        prediction| (max over channels, [-1, 1] units; no damage without a destroyer), float32
        on the device."""
        self._batch_begins()
        out: dict[str, torch.Tensor] = {}
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            g = self.generator(x, flows, labels)
            pred = g.pred.float()
            out["sse"] = frame_sse(pred, target)
            sim_m, sim_l = bottleneck_sims(g, self.margin)
            out["sim_motion"] = sim_m
            if sim_l is not None:
                out["sim_label"] = sim_l
            destroyed = None
            if self.destroyer is not None:
                destroyed = self.destroyer(pred).float()
                out["destroyer_sse"] = frame_sse(destroyed, target)
        if maps:
            out["error"] = (pred - target.float()).abs().amax(dim=1)
            if destroyed is not None:
                out["damage"] = (destroyed - pred).abs().amax(dim=1)
        # Compiled with CUDA graphs, outputs live in the graphs' memory until the next batch.
        return {k: v.float().clone() if self.compile else v.float() for k, v in out.items()}

    @torch.inference_mode()
    def video_maps(self, frames: Iterable[torch.Tensor], background=None, key: str | None = None,
                   size: int | None = None):
        """Per-pixel maps, batch by batch, for targets 4..T-1 of one video (frames (3, H, W) one
        at a time; `key`, `size` as in `stream`): yields (targets, error, damage) as numpy
        (B, H, W) float32 (`clip_outputs`; damage is None without a destroyer)."""
        for targets, inputs in self.stream(background, key, size).batches(frames):
            out = self.clip_outputs(*inputs)
            yield targets, out["error"].cpu().numpy(), out["damage"].cpu().numpy() if "damage" in out else None


class _Ring:
    """The recent frames of a stream (a FeatureStore source for video 0): frame i stays until
    `forget_before` passes it, so memory holds about a chunk whatever the stream's length."""

    def __init__(self, background: torch.Tensor | None, key: str | None = None):
        self.kept: dict[int, torch.Tensor] = {}
        self.count = 0  # frames seen
        self.bg = background
        self.key = key  # the video's name in a disk store, if any

    def add(self, frame: torch.Tensor) -> None:
        self.kept[self.count] = frame
        self.count += 1

    def forget_before(self, index: int) -> None:
        for i in [i for i in self.kept if i < index]:
            del self.kept[i]

    def num_frames(self, video: int) -> int:
        return self.count

    def frames(self, video: int, indices: range) -> torch.Tensor:
        return torch.stack([self.kept[i] for i in indices])

    def background(self, video: int) -> torch.Tensor | None:
        return self.bg

    def video_key(self, video: int) -> str | None:
        return self.key


class StreamScorer:
    """One video's frames in, (targets, ClipInputs) batches out, in one of two ways.

    A file (`push` / `finish` / `batches`): chunk k is frames [kB, kB + B) (B = the scorer's
    batch_size); once frame kB + B has arrived (or the stream ended) the chunk's features are
    computed and the clips with targets in the chunk are assembled: targets [max(4, kB), kB +
    B). The same canonical chunks as a whole-video score, so the same bits.
    A live stream (`add` / `take`): whenever the caller is free it takes the clips of every
    target that has arrived (up to a limit), so a score comes one computation after its frame."""

    def __init__(self, scorer: Scorer, background: torch.Tensor | None, key: str | None = None,
                 shards: ShardDir | None = None):
        self.scorer = scorer
        self.ring = _Ring(background, key)
        self.store = FeatureStore(scorer.extractor, self.ring, scorer.device, shards=shards)
        self.next_chunk = 0  # canonical chunks (push / finish)
        self.next_target = self.labels_done = self.pairs_done = 0  # live (add / take)

    def _batch(self, stop: int) -> tuple[list[int], ClipInputs] | None:
        """Assemble the clips of targets [max(4, kB), stop) of the next chunk k, then let go of
        what no later clip needs."""
        b, k = self.scorer.batch_size, self.next_chunk
        targets = list(range(max(INPUT_FRAMES, k * b), stop))
        self.next_chunk += 1
        if not targets:
            return None
        clips = torch.stack([self.ring.frames(0, range(t - INPUT_FRAMES, t + 1)) for t in targets])
        inputs = self.store.clip_inputs(clips, [0] * len(targets), targets)
        keep_from = (k + 1) * b - INPUT_FRAMES  # the next chunk's first clip starts here
        self.ring.forget_before(keep_from)
        self.store.forget_before(0, keep_from)
        return targets, inputs

    def push(self, frame: torch.Tensor) -> tuple[list[int], ClipInputs] | None:
        """Add the next frame (3, H, W) [-1, 1]; returns the batch it completes, if any."""
        self.ring.add(torch.as_tensor(frame, dtype=torch.float32).to(self.scorer.device))
        b = self.scorer.batch_size
        if self.ring.count >= (self.next_chunk + 1) * b + 1:  # chunk k and the frame after it
            return self._batch((self.next_chunk + 1) * b)
        return None

    def finish(self) -> Iterator[tuple[list[int], ClipInputs]]:
        """The batches left when the stream ends (its last, shorter chunk)."""
        while self.next_chunk * self.scorer.batch_size < self.ring.count:
            batch = self._batch(min((self.next_chunk + 1) * self.scorer.batch_size, self.ring.count))
            if batch is not None:
                yield batch

    # ------------------------------------------------------------------ live: what has arrived
    def add(self, frame: torch.Tensor) -> None:
        """Add the next frame (3, H, W) [-1, 1] of a live stream, to be scored by `take`."""
        self.ring.add(torch.as_tensor(frame, dtype=torch.float32).to(self.scorer.device))

    @property
    def waiting(self) -> int:
        """Frames added whose clip has not been taken yet (the first 4 are inputs only)."""
        return self.ring.count - max(INPUT_FRAMES, self.next_target)

    def take(self, limit: int) -> tuple[list[int], ClipInputs] | None:
        """The clips of the next `limit` (at most) targets whose frames have all arrived, their
        features computed in one batch whatever the chunks: a live stream scores what is there
        instead of waiting for a full chunk (entries are not canonical, so never on disk)."""
        first = max(INPUT_FRAMES, self.next_target)
        stop = min(first + limit, self.ring.count)
        if stop <= first:
            return None
        # Target t needs the labels of frames t-4..t-1 and the flows of pairs t-4..t-2.
        self.store.compute_span(0, range(self.labels_done, stop - 1), range(self.pairs_done, stop - 2))
        self.labels_done, self.pairs_done = stop - 1, stop - 2
        targets = list(range(first, stop))
        clips = torch.stack([self.ring.frames(0, range(t - INPUT_FRAMES, t + 1)) for t in targets])
        inputs = self.store.clip_inputs(clips, [0] * len(targets), targets)
        self.next_target = stop
        self.ring.forget_before(stop - INPUT_FRAMES)
        self.store.forget_before(0, stop - INPUT_FRAMES)
        return targets, inputs

    def batches(self, frames: Iterable[torch.Tensor]) -> Iterator[tuple[list[int], ClipInputs]]:
        """Every batch of a stream of frames, as each becomes complete."""
        for frame in frames:
            batch = self.push(frame)
            if batch is not None:
                yield batch
        yield from self.finish()


def _to_host(streams: dict[str, list[torch.Tensor]]) -> dict[str, np.ndarray]:
    """Each stream's batches joined on the device, then brought back in one transfer each."""
    return {k: torch.cat(v).cpu().numpy() for k, v in streams.items()}
