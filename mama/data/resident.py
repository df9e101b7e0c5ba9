"""Training frames resident on the device: every frame of the training set once, as uint8.

On a GPU the DataLoader path (decode or read a clip's 5 frames per item, collate, copy to the
device) costs more than a small model's step. When the training set fits (Ped2's 2,550 frames
at 256x256 are 500 MB as uint8), `ResidentFrames` reads each frame once into one device
tensor and makes each batch by indexing it there; the clips are the bits the loader gives
(the same uint8 frames, the same conversion to [-1, 1]).
"""
from __future__ import annotations

import numpy as np
import torch

from mama.data.datasets import ClipDataset

# The share of the device's free memory the frames may take: the rest is for the networks,
# their activations and the feature store.
RESIDENT_FRACTION = 0.25


def resident_bytes(dataset: ClipDataset) -> int:
    """Bytes the dataset's frames take as uint8 at its size."""
    height, width = dataset.size
    return sum(v.num_frames for v in dataset.videos) * height * width * 3


def fits_on(device: torch.device, nbytes: int) -> bool:
    """Whether `nbytes` of frames fit in RESIDENT_FRACTION of a CUDA device's free memory
    (never on the CPU, where the frames are in host memory either way)."""
    if device.type != "cuda":
        return False
    free, _ = torch.cuda.mem_get_info(device)
    return nbytes <= RESIDENT_FRACTION * free


def to_model_range(frames: torch.Tensor) -> torch.Tensor:
    """uint8 (..., 3, H, W) -> float32 in [-1, 1], to the bits of mama.data.datasets.uint8_to_model_range."""
    return frames.float() / 127.5 - 1.0


class ResidentFrames:
    """A ClipDataset's frames, uint8 (N, 3, H, W) BGR on `device`, read once; `batch(indices)`
    gives the DataLoader's batch of those clip indices without leaving the device."""

    def __init__(self, dataset: ClipDataset, device: torch.device | str):
        self.dataset, self.device = dataset, torch.device(device)
        height, width = dataset.size
        counts = [v.num_frames for v in dataset.videos]
        self.starts = np.concatenate([[0], np.cumsum(counts)[:-1]])  # each video's first row of `frames`
        self.frames = torch.empty((sum(counts), 3, height, width), dtype=torch.uint8, device=self.device)
        at = 0
        for v, count in enumerate(counts):
            for lo in range(0, count, 256):  # a few hundred frames at a time through host memory
                chunk = dataset.frames_uint8(v, range(lo, min(lo + 256, count)))
                self.frames[at + lo : at + lo + len(chunk)] = torch.from_numpy(chunk).permute(0, 3, 1, 2).to(self.device)
            at += count

    @property
    def nbytes(self) -> int:
        return self.frames.numel()

    def batch(self, indices) -> dict[str, torch.Tensor]:
        """{"clip": float32 (B, clip_len, 3, H, W), "video": (B,), "target": (B,)} of clip `indices`,
        as the DataLoader collates ClipDataset items (the clip on the device; video and target,
        the feature store's keys, on the host as the loader gives them)."""
        located = [self.dataset.locate(int(i)) for i in indices]
        video = torch.tensor([v for v, _ in located], dtype=torch.int64)
        target = torch.tensor([t for _, t in located], dtype=torch.int64)
        # Each clip's rows of `frames`, made on the host: one small copy to the device per batch.
        last = torch.from_numpy(self.starts)[video] + target
        rows = last[:, None] + torch.arange(-self.dataset.clip_len + 1, 1)
        return {"clip": to_model_range(self.frames[rows.to(self.device)]), "video": video, "target": target}

    def batches(self, sampler, batch_size: int):
        """Endless batches of `batch_size` clips in the sampler's order (drop_last, as the loader)."""
        indices = []
        for i in sampler:
            indices.append(i)
            if len(indices) == batch_size:
                yield self.batch(indices)
                indices = []
