"""An exact cache of the training set's generator inputs (DESIGN §9), filled lazily.

No augmentation is used, so a training frame's labels and a frame pair's flow never change:
each is computed once, the first time a batch needs it, and later batches only index the
cache. Entries are kept at the providers' coarse resolution (`coarse`: DeepLab's stride-8
logits, FlowNet2-SD's flow before its x4 upsampling) and finished with their deterministic
`expand` when a batch is assembled, exactly as `FeatureExtractor.clip_inputs` would.

For the destroyer stage the frozen generator's prediction of each clip is cached too.

Keys are dataset coordinates: (video, frame) for labels, (video, frame) for the pair
frame -> frame + 1, (video, target) for predictions; ClipDataset items carry "video" and
"target". A byte budget bounds the memory: once it is spent, new entries are computed for
the batch but not kept.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from mama.models.providers import CLIP_LEN, ClipInputs, FeatureExtractor

INPUT_FRAMES = CLIP_LEN - 1  # frames in, the fifth is predicted


class FeatureCache:
    """Per-frame labels, per-pair flow and (optionally) per-clip predictions of a training set."""

    def __init__(self, extractor: FeatureExtractor, device: torch.device | str = "cpu",
                 max_bytes: int = 4 << 30):
        self.extractor = extractor
        self.device = torch.device(device)  # where entries are kept
        self.max_bytes = max_bytes
        self.bytes = 0
        self.labels: dict[tuple[int, int], Tensor] = {}
        self.flows: dict[tuple[int, int], Tensor] = {}
        self.preds: dict[tuple[int, int], Tensor] = {}
        self.computed = {"labels": 0, "flows": 0, "preds": 0}  # entries computed so far

    def __len__(self) -> int:
        return len(self.labels) + len(self.flows) + len(self.preds)

    def _keep(self, table: dict, key: tuple[int, int], value: Tensor) -> Tensor:
        size = value.numel() * value.element_size()
        if self.bytes + size <= self.max_bytes:
            table[key] = value.to(self.device, copy=True)  # a copy: a view would pin the whole batch
            self.bytes += size
        return value

    @torch.no_grad()
    def clip_inputs(self, clips: Tensor, videos, targets, background: Tensor | None = None) -> ClipInputs:
        """The generator's inputs for a batch, as `extractor.clip_inputs(clips, background)`.

        clips (B, 5, 3, H, W) on the compute device; videos, targets (B,) the batch's
        ClipDataset coordinates; background (B, 3, H, W) when the label provider needs it.
        Only entries not cached yet are computed (one batched call per network).
        """
        ex = self.extractor
        b, _, _, h, w = clips.shape
        videos = [int(v) for v in torch.as_tensor(videos).reshape(-1)]
        targets = [int(t) for t in torch.as_tensor(targets).reshape(-1)]
        if len(videos) != b or len(targets) != b:
            raise ValueError(f"need one (video, target) per clip: {b} clips, {len(videos)} videos, {len(targets)} targets")
        # Where each needed frame / pair can be read from the batch: key -> (sample, position).
        frame_at: dict[tuple[int, int], tuple[int, int]] = {}
        for i, (v, t) in enumerate(zip(videos, targets)):
            for k in range(INPUT_FRAMES):
                frame_at.setdefault((v, t - INPUT_FRAMES + k), (i, k))

        # Pair (v, f) is frame f -> f + 1 of video v; every needed one has both frames in the batch.
        pair_keys = [(v, t - INPUT_FRAMES + k) for v, t in zip(videos, targets) for k in range(INPUT_FRAMES - 1)]
        missing = list(dict.fromkeys(k for k in pair_keys if k not in self.flows))
        fresh: dict[tuple[int, int], Tensor] = {}
        if missing:
            prev = torch.stack([clips[frame_at[k]] for k in missing])
            nxt = torch.stack([clips[frame_at[(k[0], k[1] + 1)]] for k in missing])
            for key, flow in zip(missing, ex.motion.coarse(prev, nxt)):
                fresh[key] = self._keep(self.flows, key, flow)
            self.computed["flows"] += len(missing)

        def flow_of(key):
            return fresh[key] if key in fresh else self.flows[key].to(clips.device)

        flows = ex._scaled(torch.stack([flow_of(k) for k in pair_keys]), (h, w)).reshape(b, -1, h, w)

        labels = None
        if ex.labels is not None:
            if ex.labels.uses_background and background is None:
                raise ValueError(f"label provider {ex.labels.name!r} needs the clips' backgrounds")
            missing = [key for key in frame_at if key not in self.labels]
            fresh = {}
            if missing:
                frames = torch.stack([clips[frame_at[k]] for k in missing])
                bg = None if background is None else torch.stack([background[frame_at[k][0]] for k in missing])
                for key, lab in zip(missing, ex.labels.coarse(frames, bg)):
                    fresh[key] = self._keep(self.labels, key, lab)
                self.computed["labels"] += len(missing)
            keys = [(v, t - INPUT_FRAMES + k) for v, t in zip(videos, targets) for k in range(INPUT_FRAMES)]
            coarse = torch.stack([fresh[k] if k in fresh else self.labels[k].to(clips.device) for k in keys])
            labels = ex.labels.expand(coarse, (h, w)).reshape(b, -1, h, w)

        return ClipInputs(clips[:, :INPUT_FRAMES].reshape(b, -1, h, w), flows, labels, clips[:, -1])

    @torch.no_grad()
    def predictions(self, clips: Tensor, videos, targets, predict: Callable[[ClipInputs], Tensor],
                    background: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(prediction, target frame) per clip for the destroyer stage; `predict` (the frozen,
        eval-mode generator: ClipInputs -> (n, 3, H, W)) runs only on clips not cached yet."""
        videos = [int(v) for v in torch.as_tensor(videos).reshape(-1)]
        targets = [int(t) for t in torch.as_tensor(targets).reshape(-1)]
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
