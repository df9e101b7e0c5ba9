"""The feature store: each frame's labels and each frame pair's flow, computed once, keyed by
(video, frame), for training and scoring alike (DESIGN §9).

No augmentation is used, so a frame's labels and a pair's flow never change: each is computed
the first time it is needed and later only looked up. Entries are kept at the providers'
coarse resolution (DeepLab's stride-8 logits, FlowNet2-SD's flow before its x4 upsampling)
and finished by `FeatureExtractor.assemble` when clips are put together. Keys:

    labels  (video, f)   frame f of the video
    flows   (video, f)   the pair f -> f + 1
    preds   (video, t)   the frozen generator's prediction of target t (destroyer stage)

`video` is whatever identifies a frame sequence to the caller: a ClipDataset video index in
training, a window of the validation set, 0 for the one video being scored. A store holds the
features of one choice of providers and of background (the label provider may depend on it).

Two ways in, computed the same whatever the order: `fill_video` computes every frame and pair
of a video, `chunk` at a time (scoring); `clip_inputs` computes what a training batch needs
and is missing, from the batch's own frames, one batched call per network. A byte budget
bounds what training keeps (0: keep nothing, compute per batch); a filled video is always
kept until `drop(video)`.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from mama.features.base import check_frames
from mama.features.clips import CLIP_LEN, INPUT_FRAMES, ClipInputs
from mama.features.extractor import FeatureExtractor

Key = tuple[int, int]


def _coordinates(videos, targets, count: int) -> tuple[list[int], list[int]]:
    videos = [int(v) for v in torch.as_tensor(videos).reshape(-1)]
    targets = [int(t) for t in torch.as_tensor(targets).reshape(-1)]
    if len(videos) != count or len(targets) != count:
        raise ValueError(f"need one (video, target) per clip: {count} clips, {len(videos)} videos, {len(targets)} targets")
    return videos, targets


class FeatureStore:
    """Coarse labels per frame, coarse flow per pair (and, for the destroyer stage, the frozen
    generator's prediction per clip) of any number of videos."""

    def __init__(self, extractor: FeatureExtractor, device: torch.device | str = "cpu", max_bytes: int = 4 << 30):
        self.extractor = extractor
        self.device = torch.device(device)  # where entries are kept
        self.max_bytes = max_bytes  # what `clip_inputs` may keep
        self.bytes = 0
        self.labels: dict[Key, Tensor] = {}
        self.flows: dict[Key, Tensor] = {}
        self.preds: dict[Key, Tensor] = {}
        self.computed = {"labels": 0, "flows": 0, "preds": 0}  # entries computed so far

    def __len__(self) -> int:
        return len(self.labels) + len(self.flows) + len(self.preds)

    def _keep(self, table: dict, key: Key, value: Tensor) -> Tensor:
        size = value.numel() * value.element_size()
        if self.bytes + size <= self.max_bytes:
            table[key] = value.to(self.device, copy=True)  # a copy: a view would pin the whole batch
            self.bytes += size
        return value

    # ------------------------------------------------------------------ scoring: whole videos
    @torch.no_grad()
    def fill_video(self, video: int, frames: Tensor, background: Tensor | None = None) -> None:
        """Compute and keep the labels of every frame and the flow of every consecutive pair of
        `frames` (T, 3, H, W), `extractor.chunk` at a time; background (3, H, W) when needed."""
        ex = self.extractor
        check_frames(frames, "frames")
        t = frames.shape[0]
        if t < CLIP_LEN:
            raise ValueError(f"a video needs at least {CLIP_LEN} frames, got {t}")
        step = ex.chunk
        for i in range(0, t - 1, step):  # pair i is (frame i, frame i + 1), i < T - 1
            e = min(i + step, t - 1)
            for k, flow in enumerate(ex.coarse_flows(frames[i:e], frames[i + 1 : e + 1])):
                self.flows[(video, i + k)] = flow
            self.computed["flows"] += e - i
        if ex.labels is not None:
            if ex.needs_background and background is None:
                raise ValueError(f"label provider {ex.labels.name!r} needs the video's background")
            for i in range(0, t, step):
                chunk = frames[i : i + step]
                bg = None if background is None else background.reshape(1, 3, *frames.shape[-2:]).expand_as(chunk)
                for k, lab in enumerate(ex.coarse_labels(chunk, bg)):
                    self.labels[(video, i + k)] = lab
                self.computed["labels"] += len(chunk)

    def video_clip_inputs(self, video: int, frames: Tensor, targets) -> ClipInputs:
        """ClipInputs of the clips ending at `targets` (each in 4..T-1) of a filled video whose
        frames are `frames` (T, 3, H, W): the clip of target t is frames t-4..t; nothing is computed."""
        targets = torch.as_tensor(targets, dtype=torch.long, device=frames.device).reshape(-1)
        if targets.numel() and (targets.min() < INPUT_FRAMES or targets.max() >= frames.shape[0]):
            raise ValueError(f"targets must be in {INPUT_FRAMES}..{frames.shape[0] - 1}, got {targets.tolist()}")
        starts = [int(t) - INPUT_FRAMES for t in targets.tolist()]
        offsets = torch.arange(-INPUT_FRAMES, 0, device=frames.device)  # -4..-1
        inputs = frames[targets[:, None] + offsets]  # (B, 4, 3, H, W)
        flows = torch.stack([self.flows[(video, s + k)] for s in starts for k in range(INPUT_FRAMES - 1)])
        labels = None
        if self.extractor.labels is not None:
            labels = torch.stack([self.labels[(video, s + k)] for s in starts for k in range(INPUT_FRAMES)])
        return self.extractor.assemble(inputs, frames[targets], flows, labels)

    def drop(self, video: int) -> None:
        """Forget a video's entries (a scored video is not needed again)."""
        for table in (self.labels, self.flows, self.preds):
            for key in [k for k in table if k[0] == video]:
                del table[key]

    # ------------------------------------------------------------------ training: batches
    @torch.no_grad()
    def clip_inputs(self, clips: Tensor, videos, targets, background: Tensor | None = None) -> ClipInputs:
        """The generator's inputs for a training batch.

        clips (B, 5, 3, H, W) on the compute device; videos, targets (B,) the batch's ClipDataset
        coordinates; background (B, 3, H, W) when the label provider needs it. Only entries not
        kept yet are computed, each once, from the batch's own frames (one call per network).
        """
        ex = self.extractor
        b = clips.shape[0]
        videos, targets = _coordinates(videos, targets, b)
        # Where each needed frame / pair can be read from the batch: key -> (sample, position).
        frame_at: dict[Key, tuple[int, int]] = {}
        for i, (v, t) in enumerate(zip(videos, targets)):
            for k in range(INPUT_FRAMES):
                frame_at.setdefault((v, t - INPUT_FRAMES + k), (i, k))

        # Pair (v, f) is frame f -> f + 1 of video v; every needed one has both frames in the batch.
        pair_keys = [(v, t - INPUT_FRAMES + k) for v, t in zip(videos, targets) for k in range(INPUT_FRAMES - 1)]
        missing = list(dict.fromkeys(k for k in pair_keys if k not in self.flows))
        fresh: dict[Key, Tensor] = {}
        if missing:
            prev = torch.stack([clips[frame_at[k]] for k in missing])
            nxt = torch.stack([clips[frame_at[(k[0], k[1] + 1)]] for k in missing])
            for key, flow in zip(missing, ex.coarse_flows(prev, nxt)):
                fresh[key] = self._keep(self.flows, key, flow)
            self.computed["flows"] += len(missing)
        flows = torch.stack([fresh[k] if k in fresh else self.flows[k].to(clips.device) for k in pair_keys])

        labels = None
        if ex.labels is not None:
            if ex.needs_background and background is None:
                raise ValueError(f"label provider {ex.labels.name!r} needs the clips' backgrounds")
            missing = [key for key in frame_at if key not in self.labels]
            fresh = {}
            if missing:
                frames = torch.stack([clips[frame_at[k]] for k in missing])
                bg = None if background is None else torch.stack([background[frame_at[k][0]] for k in missing])
                for key, lab in zip(missing, ex.coarse_labels(frames, bg)):
                    fresh[key] = self._keep(self.labels, key, lab)
                self.computed["labels"] += len(missing)
            keys = [(v, t - INPUT_FRAMES + k) for v, t in zip(videos, targets) for k in range(INPUT_FRAMES)]
            labels = torch.stack([fresh[k] if k in fresh else self.labels[k].to(clips.device) for k in keys])

        return ex.assemble(clips[:, :INPUT_FRAMES], clips[:, -1], flows, labels)

    @torch.no_grad()
    def predictions(self, clips: Tensor, videos, targets, predict: Callable[[ClipInputs], Tensor],
                    background: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(prediction, target frame) per clip for the destroyer stage; `predict` (the frozen,
        eval-mode generator: ClipInputs -> (n, 3, H, W)) runs only on clips not kept yet."""
        videos, targets = _coordinates(videos, targets, clips.shape[0])
        keys = list(zip(videos, targets))
        todo = [i for i, k in enumerate(keys) if k not in self.preds]
        fresh = {}
        if todo:
            idx = torch.tensor(todo, device=clips.device)
            bg = None if background is None else background[idx]
            inputs = self.clip_inputs(clips[idx], [videos[i] for i in todo], [targets[i] for i in todo], bg)
            for i, pred in zip(todo, predict(inputs)):
                fresh[keys[i]] = self._keep(self.preds, keys[i], pred)
            self.computed["preds"] += len(todo)
        preds = torch.stack([fresh[k] if k in fresh else self.preds[k].to(clips.device) for k in keys])
        return preds, clips[:, -1]
