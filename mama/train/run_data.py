"""A run's data: its videos (split into training and held-out ones), the clips, the frames on
the device or the loader that reads them, the feature store and the clip order."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from mama.config import TrainConfig, feature_dir
from mama.data.datasets import ClipDataset, VideoBalancedSampler, check_frame_files, make_samples
from mama.data.resident import ResidentFrames, fits_on, resident_bytes
from mama.errors import MamaError
from mama.evaluate.validation import PSEUDO_KINDS, check_pseudo_anomalies
from mama.features.extractor import FeatureExtractor
from mama.features.store import DatasetSource, FeatureStore, FrameSource, feature_shards
from mama.runtime import Runtime

FEATURE_BUDGET = 4 << 30  # bytes of training features kept in memory (feature_store "memory")
# ... and beside a store on disk, the most recently used (the rest is read back from disk), so
# memory does not grow with the length of the footage.
DISK_MEMORY_BUDGET = 128 << 20


def feature_store(c: TrainConfig, ex: FeatureExtractor, source: FrameSource, device, resident: bool) -> FeatureStore:
    """The training features of `source`. No augmentation: a frame's labels, a pair's flow (and,
    for the destroyer, a clip's frozen prediction) never change, so each is computed once
    (docs/design.md), from frames the store reads itself, in canonical chunks (the same bits
    whatever the batch)."""
    if (folder := feature_dir(c.feature_store)) is not None and ex.weights_id is not None:
        shards = feature_shards(folder, ex.weights_id, c.size, ex.chunk, background="video-median")
        return FeatureStore(ex, source, device, FEATURE_BUDGET if resident else DISK_MEMORY_BUDGET, shards)
    return FeatureStore(ex, source, device, FEATURE_BUDGET if c.feature_store != "off" else 0)


class RankShard(torch.utils.data.Sampler):
    """The shared endless clip order, split across DDP ranks (rank r takes every world-th)."""

    def __init__(self, sampler: VideoBalancedSampler, rank: int, world: int):
        self.sampler, self.rank, self.world = sampler, rank, world

    def __iter__(self):
        for i, idx in enumerate(self.sampler):
            if i % self.world == self.rank:
                yield idx


@dataclass
class RunData:
    train_videos: list
    val_videos: list  # held out for validation and calibration (the training ones where none is)
    dataset: ClipDataset
    resident: ResidentFrames | None  # the training frames on the device ...
    loader: DataLoader | None  # ... or the loader that reads them
    store: FeatureStore
    sampler: VideoBalancedSampler  # the shared clip order (resumed by position)
    rank_sampler: torch.utils.data.Sampler  # this rank's share of it

    def batches(self, batch_size: int):
        """The endless batches of this rank: made on the device from the resident frames, or by the loader."""
        if self.resident is not None:
            return self.resident.batches(self.rank_sampler, batch_size)
        return iter(self.loader)

    def release(self) -> None:
        """Stop the loader's worker processes now, not when the run is collected: forked while
        the run folder was locked, they hold its lock's descriptor."""
        workers = getattr(self.loader, "_iterator", None)
        if workers is not None and hasattr(workers, "_shutdown_workers"):
            workers._shutdown_workers()
        self.loader = None


def split_videos(c: TrainConfig) -> tuple[list, list]:
    """(training videos, held-out videos), checked: a bad frame is found now, not by a batch hours in.
    `holdout` videos (the fast preset's last one) are kept out of training for validation and
    calibration, when there are enough to spare; the paper preset trains on all of them."""
    videos = make_samples(c.dataset, Path(c.data_root), "training")
    check_frame_files(videos)
    held = c.holdout if len(videos) > c.holdout + 1 else 0
    train_videos = videos[: len(videos) - held]
    val_videos = videos[len(videos) - held :] or train_videos
    if not c.select_on_test:
        check_pseudo_anomalies(val_videos, PSEUDO_KINDS)
    return train_videos, val_videos


def run_data(c: TrainConfig, rt: Runtime, ex: FeatureExtractor) -> RunData:
    """The run's data, checked; the features precomputed where they are kept (on disk: each
    chunk once, by one rank, in batches of a chunk; every rank reads them all)."""
    train_videos, val_videos = split_videos(c)
    dataset = ClipDataset(train_videos, size=(c.size, c.size))
    if c.batch_size * rt.world_size > len(dataset):
        per = " per process" if rt.distributed else ""
        raise MamaError(f"--batch-size {c.batch_size}{per} is more than the {len(dataset)} training clips of "
                        f"{c.data_root} ({len(train_videos)} videos); use --batch-size "
                        f"{max(1, len(dataset) // rt.world_size)} or less (the paper's is 4)")
    want = c.resident if c.resident is not None else fits_on(rt.device, resident_bytes(dataset))
    resident = ResidentFrames(dataset, rt.device) if want else None
    source = DatasetSource(dataset, rt.device, with_background=ex.needs_background, name=f"{c.dataset}/training")
    store = feature_store(c, ex, source, rt.device, resident is not None)
    if store.shards is not None:
        store.precompute(range(len(train_videos)), rt.rank, rt.world_size)
        if rt.distributed:
            torch.distributed.barrier()
    if resident is not None:
        # With the frames, the features too, up front and on the device, as far as the budget goes.
        store.fill(range(len(train_videos)))
    # Under DDP every global batch holds distinct videos; each rank takes its share of it.
    sampler = VideoBalancedSampler(dataset, c.batch_size * rt.world_size, seed=c.seed)
    rank_sampler = RankShard(sampler, rt.rank, rt.world_size) if rt.distributed else sampler
    loader = None if resident is not None else DataLoader(
        dataset, batch_size=c.batch_size, sampler=rank_sampler, num_workers=c.num_workers,
        pin_memory=rt.device.type == "cuda", persistent_workers=c.num_workers > 0,
        prefetch_factor=4 if c.num_workers > 0 else None, drop_last=True)
    return RunData(train_videos, val_videos, dataset, resident, loader, store, sampler, rank_sampler)
