"""The feature store: each frame's labels and each frame pair's flow, computed once, keyed by
(video, frame), for training and scoring alike (docs/design.md).

No augmentation is used, so a frame's labels and a pair's flow never change: each is computed
the first time it is needed and later only looked up. Entries are kept at the providers'
coarse resolution (DeepLab's stride-8 logits, FlowNet2-SD's flow before its x4 upsampling)
and finished by `FeatureExtractor.assemble` when clips are put together. Keys:

    labels  (video, f)   frame f of the video
    flows   (video, f)   the pair f -> f + 1
    preds   (video, t)   the frozen generator's prediction of target t (destroyer stage)

Everything is computed in canonical chunks: the labels of frames [kC, kC + C) and the flow of
pairs [kC, kC + C) of a video (C = extractor.chunk), the predictions of targets [kP, kP + P)
(P = PRED_CHUNK), one batched call per network each. A network's floating-point result can
depend on what else is in its batch; computed always in the same groups, an entry has the same
bits whichever batch first needed it, so a resumed run, a run with the store and one without,
and scoring all see identical features.

`video` is whatever identifies a frame sequence to the `source` the frames are read from: a
ClipDataset video in training (`DatasetSource`), a window of the validation set, the one video
being scored (`TensorSource`). A store holds the features of one choice of providers and of
background (the label provider may depend on it). A byte budget bounds what is kept in memory
(0: keep nothing, compute what each batch needs); `drop(video)` forgets a video.

On disk (`ShardDir`, optional): each computed chunk is also written as one safetensors shard,
atomically, under a folder named by what the features depend on (providers, their weights,
frame size, chunk, background); a later run, the other stage, or an evaluation reads it
instead of computing it again. Sources that can name their videos (`video_key`) use it.
"""
from __future__ import annotations

import collections
import hashlib
import json
from pathlib import Path
from typing import Callable, Protocol

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from mama.features.base import check_frames
from mama.features.clips import CLIP_LEN, INPUT_FRAMES, ClipInputs
from mama.features.extractor import FeatureExtractor
from mama.cache import Hold, hold
from mama.io import atomic_path

Key = tuple[int, int]
PRED_CHUNK = 16  # targets per canonical group of predictions


class FrameSource(Protocol):
    """Where a store reads the frames (and backgrounds) of the videos it computes."""

    def num_frames(self, video: int) -> int: ...

    def frames(self, video: int, indices: range) -> Tensor: ...  # (N, 3, H, W) float32 on the device

    def background(self, video: int) -> Tensor | None: ...  # (3, H, W), or None when not needed

    def video_key(self, video: int) -> str | None: ...  # a name that stays the video's across runs; None: none


class TensorSource:
    """Videos already in memory: {video: (T, 3, H, W) frames}, {video: (3, H, W) background}."""

    def __init__(self, videos: dict[int, Tensor] | None = None, backgrounds: dict[int, Tensor | None] | None = None):
        self.videos = dict(videos or {})
        self.backgrounds = dict(backgrounds or {})

    def add(self, video: int, frames: Tensor, background: Tensor | None = None) -> None:
        check_frames(frames, "frames")
        self.videos[video], self.backgrounds[video] = frames, background

    def num_frames(self, video: int) -> int:
        return self.videos[video].shape[0]

    def frames(self, video: int, indices: range) -> Tensor:
        return self.videos[video][indices.start : indices.stop]

    def background(self, video: int) -> Tensor | None:
        return self.backgrounds.get(video)

    def video_key(self, video: int) -> str | None:
        return None  # frames in memory have no lasting name: nothing goes to disk


class DatasetSource:
    """A ClipDataset's videos, decoded on demand at its frame size, on `device`; `name` (e.g.
    "ped2/training") names them on disk."""

    def __init__(self, dataset, device: torch.device | str, with_background: bool, name: str = ""):
        self.dataset, self.device, self.with_background = dataset, torch.device(device), with_background
        self.name = name

    def num_frames(self, video: int) -> int:
        return self.dataset.videos[video].num_frames

    def frames(self, video: int, indices: range) -> Tensor:
        return torch.from_numpy(np.ascontiguousarray(self.dataset.frames(video, indices))).to(self.device)

    def background(self, video: int) -> Tensor | None:
        if not self.with_background:
            return None
        return torch.from_numpy(self.dataset.background(video).copy()).to(self.device)

    def video_key(self, video: int) -> str | None:
        return f"{self.name}/{record_key(self.dataset.videos[video])}" if self.name else None


def record_key(record, frames: int | None = None) -> str:
    """A video's name in a disk store: its name and a digest of where it is read from and of how
    many of its frames are used (all of them unless `frames`)."""
    count = record.num_frames if frames is None else frames
    return f"{record.name}-{hashlib.sha1(f'{Path(record.source).resolve()}|{count}'.encode()).hexdigest()[:12]}"


class ShardDir:
    """Features on disk: one safetensors file per (video, chunk), written atomically, so a
    killed run leaves each shard whole or absent. The folder is named by a digest of
    `identity` (what the features depend on), which it also keeps as identity.json.

    Each video's folder is a cache entry (mama.cache): from its first use until `close()` (or
    until this object is collected) the store holds it, so `mama cache clear` keeps it."""

    def __init__(self, root: str | Path, identity: dict):
        text = json.dumps(identity, sort_keys=True)
        self.dir = Path(root) / hashlib.sha256(text.encode()).hexdigest()[:16]
        self.identity = identity
        self._holds: dict[str, Hold] = {}
        self._write_identity()

    def _write_identity(self) -> None:
        if not (self.dir / "identity.json").is_file():
            with atomic_path(self.dir / "identity.json") as tmp:
                tmp.write_text(json.dumps(self.identity, indent=1, sort_keys=True))

    def path(self, video_key: str, k: int) -> Path:
        if video_key not in self._holds:
            self._holds[video_key] = hold(self.dir / video_key)
            self._write_identity()  # a clear may have removed the emptied store's identity
        return self.dir / video_key / f"chunk{k:06d}.safetensors"

    def close(self) -> None:
        """Let go of the videos this store held."""
        for entry in self._holds.values():
            entry.close()
        self._holds.clear()

    def _identity(self, video_key: str, k: int) -> dict[str, str]:
        """What a shard says it is (its safetensors metadata): a shard copied over another's
        name, or left from another store, does not pass for it."""
        return {"store": self.dir.name, "video": video_key, "chunk": str(k)}

    def load(self, video_key: str, k: int, counts: dict[str, int] | None = None) -> dict[str, Tensor] | None:
        """Chunk k of a video, or None when it is absent, unreadable, not this chunk's (its
        identity differs) or not holding `counts` entries of each name: computed again and rewritten."""
        path = self.path(video_key, k)
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt") as f:
                if (f.metadata() or {}) != self._identity(video_key, k):
                    return None
                tensors = {name: f.get_tensor(name) for name in f.keys()}
        except (SafetensorError, OSError, ValueError):
            return None
        if any(n and (name not in tensors or len(tensors[name]) != n) for name, n in (counts or {}).items()):
            return None
        return tensors

    def save(self, video_key: str, k: int, tensors: dict[str, Tensor]) -> None:
        path = self.path(video_key, k)
        with atomic_path(path, suffix=".safetensors") as tmp:
            save_file({name: t.detach().cpu().contiguous() for name, t in tensors.items()}, str(tmp),
                      metadata=self._identity(video_key, k))

    def nbytes(self) -> int:
        return sum(p.stat().st_size for p in self.dir.rglob("*.safetensors"))


def feature_shards(root: str | Path, weights_id: dict, size: int, chunk: int, **use) -> ShardDir:
    """The disk store of the features made by the providers `weights_id` names, from frames of
    side `size`, in chunks of `chunk` frames; `use` keeps the entries of one use apart from
    another's (training's background; scoring's device and inference copies)."""
    return ShardDir(root, {"format": 1, **weights_id, "size": size, "chunk": chunk, **use})

def _coordinates(videos, targets, count: int) -> tuple[list[int], list[int]]:
    videos = [int(v) for v in torch.as_tensor(videos).reshape(-1)]
    targets = [int(t) for t in torch.as_tensor(targets).reshape(-1)]
    if len(videos) != count or len(targets) != count:
        raise ValueError(f"need one (video, target) per clip: {count} clips, {len(videos)} videos, {len(targets)} targets")
    return videos, targets


class FeatureStore:
    """Coarse labels per frame, coarse flow per pair (and, for the destroyer stage, the frozen
    generator's prediction per clip) of the videos of a source."""

    def __init__(self, extractor: FeatureExtractor, source: FrameSource | None = None,
                 device: torch.device | str = "cpu", max_bytes: int = 4 << 30, shards: ShardDir | None = None):
        self.extractor = extractor
        self.source = source if source is not None else TensorSource()
        self.shards = shards
        self.device = torch.device(device)  # where entries are kept
        self.max_bytes = max_bytes
        self.bytes = 0
        self.labels: dict[Key, Tensor] = {}
        self.flows: dict[Key, Tensor] = {}
        self.preds: dict[Key, Tensor] = {}
        self.computed = {"labels": 0, "flows": 0, "preds": 0}  # entries computed so far
        self.loaded = 0  # chunks read from disk
        self._recent: collections.OrderedDict = collections.OrderedDict()  # least recently used first

    def __len__(self) -> int:
        return len(self.labels) + len(self.flows) + len(self.preds)

    def _table(self, name: str) -> dict:
        return {"labels": self.labels, "flows": self.flows, "preds": self.preds}[name]

    def _name(self, table: dict) -> str:
        return "labels" if table is self.labels else "flows" if table is self.flows else "preds"

    def _keep(self, table: dict, key: Key, value: Tensor, always: bool) -> None:
        size = value.numel() * value.element_size()
        if not always and self.shards is not None:  # on disk: memory keeps the most recently used
            while self._recent and self.bytes + size > self.max_bytes:
                name, old_key = self._recent.popitem(last=False)[0]
                old_table = self._table(name)
                if old_key in old_table:
                    self.bytes -= old_table[old_key].numel() * old_table[old_key].element_size()
                    del old_table[old_key]
        if always or self.bytes + size <= self.max_bytes:
            table[key] = value.to(self.device, copy=True)  # a copy: a view would pin the whole chunk
            self.bytes += size
            if self.shards is not None and not always:
                self._recent[(self._name(table), key)] = None

    # ------------------------------------------------------------------ computing, by chunk
    @torch.no_grad()
    def _compute_chunk(self, video: int, k: int, keep_all: bool) -> dict[str, dict[Key, Tensor]]:
        """Labels of frames [kC, kC + C) and flows of pairs [kC, kC + C) of `video` (each pair
        f -> f + 1 with f + 1 < T), from disk when a shard holds them, else computed (and
        written); kept within the budget (all of them with `keep_all`)."""
        frames, pairs = self._chunk_bounds(video, k)
        start = frames.start
        key = self.source.video_key(video) if self.shards is not None else None
        counts = {"flows": len(pairs), "labels": len(frames) if self.extractor.labels is not None else 0}
        tensors = self.shards.load(key, k, counts) if key is not None else None
        if tensors is not None:
            self.loaded += 1
        else:
            tensors = self._compute(video, k)
            if key is not None:
                self.shards.save(key, k, tensors)
        out = {"flows": {}, "labels": {}}
        for name, table in (("flows", self.flows), ("labels", self.labels)):
            for i, value in enumerate(tensors.get(name, ())):
                value = value.to(self.device)
                out[name][(video, start + i)] = value
                self._keep(table, (video, start + i), value, keep_all)
        return out

    def _chunk_bounds(self, video: int, k: int) -> tuple[range, range]:
        """Chunk k of a video: its frames [kC, kC + C) and its pairs [kC, kC + C) (pair f is
        f -> f + 1), both cut at the video's end (C = extractor.chunk)."""
        c, t = self.extractor.chunk, self.source.num_frames(video)
        return range(k * c, min(k * c + c, t)), range(k * c, min(k * c + c, t - 1))

    def _num_chunks(self, video: int) -> int:
        """How many canonical chunks cover a video's frames."""
        return -(-self.source.num_frames(video) // self.extractor.chunk)

    def _compute(self, video: int, k: int) -> dict[str, Tensor]:
        """One batched call per network: chunk k's pair flows and frame labels."""
        return self._compute_span(video, *self._chunk_bounds(video, k))

    def _compute_span(self, video: int, frames_range: range, pairs: range) -> dict[str, Tensor]:
        """The labels of frames `frames_range` and the flows of pairs `pairs` (f -> f + 1), one
        batched call per network."""
        ex = self.extractor
        start = min(frames_range.start, pairs.start)
        frames = self.source.frames(video, range(start, max(frames_range.stop, pairs.stop + 1)))
        out = {}
        if len(pairs):
            n, p0 = len(pairs), pairs.start - start
            out["flows"] = ex.coarse_flows(frames[p0 : p0 + n], frames[p0 + 1 : p0 + n + 1])
            self.computed["flows"] += n
        if ex.labels is not None and len(frames_range):
            chunk = frames[frames_range.start - start : frames_range.stop - start]
            bg = self.source.background(video)
            if ex.needs_background and bg is None:
                raise ValueError(f"label provider {ex.labels.name!r} needs the video's background")
            bg = None if bg is None else bg.reshape(1, 3, *chunk.shape[-2:]).expand_as(chunk)
            out["labels"] = ex.coarse_labels(chunk, bg)
            self.computed["labels"] += len(chunk)
        return out

    @torch.no_grad()
    def compute_span(self, video: int, frames_range: range, pairs: range) -> None:
        """Compute and keep the labels of `frames_range` and the flows of `pairs` of a video, in
        one batch whatever their chunks (a live stream scores what has arrived; its entries are
        never written to disk)."""
        tensors = self._compute_span(video, frames_range, pairs)
        for name, table, first in (("flows", self.flows, pairs.start), ("labels", self.labels, frames_range.start)):
            for i, value in enumerate(tensors.get(name, ())):
                self._keep(table, (video, first + i), value, always=True)

    def precompute(self, videos, rank: int = 0, world: int = 1) -> int:
        """Write the shards of every chunk of `videos` that this rank owns (chunk i of the sorted
        list goes to rank i % world) and that are not on disk yet; returns how many it computed.
        Under torchrun every rank calls this, then waits at a barrier: each chunk is computed
        once, by one rank, and every rank reads them all."""
        if self.shards is None:
            return 0
        chunks = [(v, k) for v in videos for k in range(self._num_chunks(v))]
        done = 0
        for i, (v, k) in enumerate(chunks):
            key = self.source.video_key(v)
            if i % world != rank or key is None or self.shards.path(key, k).is_file():
                continue
            self.shards.save(key, k, self._compute(v, k))
            done += 1
        return done

    def fill(self, videos) -> int:
        """Keep the features of `videos` in memory, chunk by chunk in order (read from disk where a
        shard holds them, else computed), until the budget is spent; returns the chunks kept.
        Each chunk has the bits it has when a batch first needs it (canonical chunks)."""
        kept = 0
        for v in videos:
            for k in range(self._num_chunks(v)):
                if self.bytes >= self.max_bytes:
                    return kept
                if not self._chunk_kept(v, k):
                    self._compute_chunk(v, k, keep_all=False)
                kept += 1
        return kept

    def _touch(self, names_keys) -> None:
        """Make these (table name, key) entries the most recently used (a disk store's memory evicts the least)."""
        for name_key in names_keys:
            if name_key in self._recent:
                self._recent.move_to_end(name_key)

    def _chunk_kept(self, video: int, k: int) -> bool:
        """Whether every entry of chunk k of `video` is kept."""
        frames, pairs = self._chunk_bounds(video, k)
        flows_kept = all((video, f) in self.flows for f in pairs)
        labels_kept = self.extractor.labels is None or all((video, f) in self.labels for f in frames)
        return flows_kept and labels_kept

    def _entries(self, label_keys: list[Key], pair_keys: list[Key]) -> tuple[list[Tensor], list[Tensor]]:
        """The coarse labels and flows of these keys, computing each missing one's chunk once."""
        c = self.extractor.chunk
        fresh: dict[str, dict[Key, Tensor]] = {"flows": {}, "labels": {}}
        wanted = [(self.flows, "flows", k) for k in pair_keys]
        if self.extractor.labels is not None:
            wanted += [(self.labels, "labels", k) for k in label_keys]
        # Held here (and made the most recent): computing the missing chunks may evict kept entries.
        kept = {(name, key): table[key] for table, name, key in wanted if key in table}
        self._touch(kept)
        chunks = dict.fromkeys((v, f // c) for table, name, (v, f) in wanted if (name, (v, f)) not in kept)
        for v, k in chunks:
            for name, entries in self._compute_chunk(v, k, keep_all=False).items():
                fresh[name].update(entries)

        def get(name, key):
            return fresh[name][key] if key in fresh[name] else kept[name, key].to(self.device)

        flows = [get("flows", k) for k in pair_keys]
        labels = [get("labels", k) for k in label_keys] if self.extractor.labels is not None else []
        return flows, labels

    def _assemble(self, starts: list[Key], inputs: Tensor, target: Tensor) -> ClipInputs:
        """ClipInputs of the clips whose input frames start at `starts` ((video, frame) each):
        their input frames (B, 4, 3, H, W) and target frames (B, 3, H, W) as given, the coarse
        labels of the 4 input frames and the flows of their 3 pairs from the store."""
        flows, labels = self._entries([(v, s + j) for v, s in starts for j in range(INPUT_FRAMES)],
                                      [(v, s + j) for v, s in starts for j in range(INPUT_FRAMES - 1)])
        return self.extractor.assemble(inputs, target, torch.stack(flows), torch.stack(labels) if labels else None)

    # ------------------------------------------------------------------ whole videos (scoring)
    def fill_video(self, video: int, frames: Tensor | None = None, background: Tensor | None = None) -> None:
        """Compute and keep every frame's labels and every pair's flow of a video; with `frames`
        (T, 3, H, W) (and `background` (3, H, W) when needed) the video is added to the source."""
        if frames is not None:
            self.source.add(video, frames, background)
        t = self.source.num_frames(video)
        if t < CLIP_LEN:
            raise ValueError(f"a video needs at least {CLIP_LEN} frames, got {t}")
        for k in range(self._num_chunks(video)):
            if not self._chunk_kept(video, k):
                self._compute_chunk(video, k, keep_all=True)

    def video_clip_inputs(self, video: int, frames: Tensor, targets) -> ClipInputs:
        """ClipInputs of the clips ending at `targets` (each in 4..T-1) of a video whose frames are
        `frames` (T, 3, H, W): the clip of target t is frames t-4..t; features from the store."""
        targets = torch.as_tensor(targets, dtype=torch.long, device=frames.device).reshape(-1)
        if targets.numel() and (targets.min() < INPUT_FRAMES or targets.max() >= frames.shape[0]):
            raise ValueError(f"targets must be in {INPUT_FRAMES}..{frames.shape[0] - 1}, got {targets.tolist()}")
        offsets = torch.arange(-INPUT_FRAMES, 0, device=frames.device)  # -4..-1
        return self._assemble([(video, int(t) - INPUT_FRAMES) for t in targets.tolist()],
                              frames[targets[:, None] + offsets], frames[targets])

    def drop(self, video: int) -> None:
        """Forget a video's entries (a scored video is not needed again)."""
        self.forget_before(video, None)

    def forget_before(self, video: int, frame: int | None) -> None:
        """Forget a video's entries of frames (pairs, targets) before `frame` (None: all)."""
        for table in (self.labels, self.flows, self.preds):
            for key in [k for k in table if k[0] == video and (frame is None or k[1] < frame)]:
                self.bytes -= table[key].numel() * table[key].element_size()
                del table[key]
                self._recent.pop((self._name(table), key), None)

    # ------------------------------------------------------------------ training batches
    def clip_inputs(self, clips: Tensor, videos, targets) -> ClipInputs:
        """The generator's inputs for a training batch: clips (B, 5, 3, H, W) on the compute
        device, videos / targets (B,) their coordinates in the source."""
        videos, targets = _coordinates(videos, targets, clips.shape[0])
        return self._assemble([(v, t - INPUT_FRAMES) for v, t in zip(videos, targets)],
                              clips[:, :INPUT_FRAMES], clips[:, -1])

    @torch.no_grad()
    def predictions(self, clips: Tensor, videos, targets, predict: Callable[[ClipInputs], Tensor]) -> tuple[Tensor, Tensor]:
        """(prediction, target frame) per clip for the destroyer stage. `predict` (the frozen,
        eval-mode generator: ClipInputs -> (n, 3, H, W)) runs on the canonical group of targets
        [kP, kP + P) of each clip not kept yet, its frames read from the source."""
        videos, targets = _coordinates(videos, targets, clips.shape[0])
        # Held here (and made the most recent): computing the missing groups may evict kept predictions.
        kept = {(v, t): self.preds[(v, t)] for v, t in zip(videos, targets) if (v, t) in self.preds}
        self._touch(("preds", key) for key in kept)
        fresh: dict[Key, Tensor] = {}
        for v, k in dict.fromkeys((v, t // PRED_CHUNK) for v, t in zip(videos, targets) if (v, t) not in kept):
            t_len = self.source.num_frames(v)
            group = list(range(max(k * PRED_CHUNK, INPUT_FRAMES), min(k * PRED_CHUNK + PRED_CHUNK, t_len)))
            frames = self.source.frames(v, range(group[0] - INPUT_FRAMES, group[-1] + 1))
            local = torch.tensor(group, device=frames.device) - (group[0] - INPUT_FRAMES)
            offsets = torch.arange(-INPUT_FRAMES, 0, device=frames.device)
            inputs = self._assemble([(v, t - INPUT_FRAMES) for t in group], frames[local[:, None] + offsets],
                                    frames[local])
            for t, pred in zip(group, predict(inputs)):
                fresh[(v, t)] = pred
                self._keep(self.preds, (v, t), pred, always=False)
            self.computed["preds"] += len(group)
        preds = torch.stack([fresh[(v, t)] if (v, t) in fresh else kept[(v, t)].to(clips.device)
                             for v, t in zip(videos, targets)])
        return preds, clips[:, -1]
