"""Benchmarks of mama::correlation on CPU: the C++ kernel (`ours`, through mama.ops) against
the plain-PyTorch reference (`reference`, shifted products + autograd), forward and
forward+backward, at FlowNetC's real size: (4, 256, 32, 32) features (256x256 frames),
pad 20, kernel 1, max_disp 20, stride1 1, stride2 2, fused LeakyReLU(0.1) -> 441 channels.

Each direction is one benchmark group, so pytest-benchmark prints the two providers side by
side; the ratio reference/ours is the speed-up. The reference takes seconds per call, so
rounds are fixed (pedantic) to keep the suite short.
"""
from __future__ import annotations

from typing import Callable

import pytest
import torch

import mama.ops as ops
from mama import reference
from benchmarks import sizes

SIZE = sizes.CORRELATION  # (B, C, H, W): FlowNetC's conv3 features at 256x256 input
FLOWNETC = (20, 1, 20, 1, 2, 0.1)  # pad, kernel_size, max_disp, stride1, stride2, negative_slope
IMPLS = {"ours": ops.correlation, "reference": reference.correlation}


def make_case(direction: str, provider: str) -> Callable[[], object]:
    """The timed call for one case; inputs and the upstream gradient are made once, seeded."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(SIZE, generator=gen)
    b = torch.randn(SIZE, generator=gen)
    fn = IMPLS[provider]
    if direction == "forward":
        return lambda: fn(a, b, *FLOWNETC)

    a.requires_grad_()
    b.requires_grad_()
    grid = 2 * (FLOWNETC[2] // FLOWNETC[4]) + 1
    upstream = torch.randn((SIZE[0], grid * grid, SIZE[2], SIZE[3]), generator=gen)

    def forward_backward():
        return torch.autograd.grad(fn(a, b, *FLOWNETC), (a, b), upstream)

    return forward_backward


@pytest.mark.parametrize("provider", ["ours", "reference"])
@pytest.mark.parametrize("direction", ["forward", "full"])
def test_bench_correlation(benchmark, direction, provider):
    benchmark.group = f"correlation-{direction}-{'x'.join(map(str, SIZE))}"
    run = make_case(direction, provider)
    result = benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=1)
    assert all(torch.isfinite(t).all() for t in (result if isinstance(result, tuple) else (result,)))
