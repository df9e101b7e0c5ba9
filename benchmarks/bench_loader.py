"""The training data loader alone: ClipDataset + VideoBalancedSampler + DataLoader on the real UCSD
Ped2 training frames (JPEG decode + resize to 256x256 + scale to [-1, 1]), as the trainer
builds it, with 0, 1 and 2 worker processes. extra_info: frames decoded per second.

    pytest benchmarks/bench_loader.py --benchmark-only --benchmark-json benchmarks/results/cpu_loader.json

Pinned memory is used where it means something (a CUDA device is present).
"""
from __future__ import annotations

from itertools import islice

import pytest
import torch
from torch.utils.data import DataLoader

from mama.data.datasets import CLIP_LEN, ClipDataset, VideoBalancedSampler, make_samples

SIZE = (256, 256)
BATCH = 4
BATCHES = 10  # per round: 10 x 4 clips x 5 frames = 200 frames decoded


@pytest.fixture(scope="module")
def dataset(ped2_root):
    return ClipDataset(make_samples("ped2", ped2_root, "training"), size=SIZE)


@pytest.mark.parametrize("workers", [0, 1, 2])
def test_loader_throughput(benchmark, dataset, workers):
    loader = DataLoader(dataset, batch_size=BATCH, sampler=VideoBalancedSampler(dataset, BATCH, seed=0), num_workers=workers,
                        pin_memory=torch.cuda.is_available(), persistent_workers=workers > 0,
                        prefetch_factor=4 if workers else None, drop_last=True)

    def consume():
        n = 0
        for batch in islice(iter(loader), BATCHES):
            n += batch["clip"].shape[0] * batch["clip"].shape[1]
        return n

    benchmark.group = "loader-ped2-256"
    frames = benchmark.pedantic(consume, rounds=3, iterations=1, warmup_rounds=1)  # warm-up starts the workers
    assert frames == BATCHES * BATCH * CLIP_LEN
    benchmark.extra_info.update(workers=workers, frames=frames, fps=frames / benchmark.stats.stats.mean,
                                pin_memory=loader.pin_memory)
