"""Benchmarks of mama::bottleneck_sim on CPU: the C++ kernel (`ours`, through mama.ops)
against the plain-PyTorch reference (`reference`: F.normalize + torch.pairwise_distance, as
the paper code computes it, with autograd for the backward), forward and forward+backward,
at the real F2LM bottleneck: five (4, 512, 32, 32) features (batch 4, 256 x 256 frames).

Each direction is one benchmark group, so pytest-benchmark prints the two providers side by
side; the ratio reference/ours is the speed-up.
"""
from __future__ import annotations

from typing import Callable

import pytest
import torch

import mama.ops as ops
from mama import reference
from benchmarks import sizes

SIZE = sizes.BOTTLENECK  # (B, C, h, w) of each of x4, y4, x_y, z4, x_z
MARGIN = 0.2
IMPLS = {
    "ours": lambda *feats: ops.bottleneck_sim(*feats, margin=MARGIN),
    "reference": lambda *feats: reference.bottleneck_sim(*feats, MARGIN),
}


def make_case(direction: str, provider: str) -> Callable[[], object]:
    """The timed call for one case; the features and upstream gradients are made once, seeded."""
    gen = torch.Generator().manual_seed(0)
    feats = [torch.randn(SIZE, generator=gen) for _ in range(5)]
    fn = IMPLS[provider]
    if direction == "forward":
        return lambda: fn(*feats)
    leaves = [t.requires_grad_() for t in feats]
    upstream = [torch.randn(SIZE[0], generator=gen) for _ in range(2)]
    return lambda: torch.autograd.grad(fn(*leaves), leaves, upstream)


@pytest.mark.parametrize("provider", ["ours", "reference"])
@pytest.mark.parametrize("direction", ["forward", "full"])
def test_bench_bottleneck_sim(benchmark, direction, provider):
    benchmark.group = f"bottleneck_sim-{direction}-5x{'x'.join(map(str, SIZE))}"
    result = benchmark(make_case(direction, provider))
    assert all(torch.isfinite(t).all() for t in result)
