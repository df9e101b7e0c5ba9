"""Benchmarks of mama::warp and mama::warp_residual on CPU: the C++ kernel (`ours`, through
mama.ops) against the plain-PyTorch reference (`reference`, gather + autograd), forward and
forward+backward, at FlowNet2's warping size (4 RGB frames at 256x256).

Each (op, direction) pair is one benchmark group, so pytest-benchmark prints the two
providers side by side; the ratio reference/ours is the speed-up.
"""
from __future__ import annotations

from typing import Callable

import pytest
import torch

import mama.ops as ops
from mama import reference
from benchmarks import sizes

SIZE = sizes.WARP  # (B, C, H, W) of FlowNet2's warp of the second frame
IMPLS = {
    "ours": {"warp": ops.warp, "warp_residual": ops.warp_residual},
    "reference": {"warp": reference.warp, "warp_residual": reference.warp_residual},
}


def make_case(op: str, direction: str, provider: str) -> Callable[[], object]:
    """The timed call for one case; inputs and upstream gradients are made once, seeded."""
    gen = torch.Generator().manual_seed(0)
    batch, _, height, width = SIZE
    img0 = torch.randn(SIZE, generator=gen)
    img1 = torch.randn(SIZE, generator=gen)
    flow = 4 * torch.randn((batch, 2, height, width), generator=gen)
    fn = IMPLS[provider][op]
    inputs = (img1, flow) if op == "warp" else (img0, img1, flow)
    if direction == "forward":
        return lambda: fn(*inputs)

    leaves = [x.requires_grad_() for x in inputs]
    upstream = [torch.randn(SIZE, generator=gen)]
    if op == "warp_residual":
        upstream.append(torch.randn((batch, 1, height, width), generator=gen))

    def forward_backward():
        outs = fn(*leaves)
        outs = outs if isinstance(outs, tuple) else (outs,)
        return torch.autograd.grad(outs, leaves, upstream)

    return forward_backward


@pytest.mark.parametrize("provider", ["ours", "reference"])
@pytest.mark.parametrize("direction", ["forward", "full"])
@pytest.mark.parametrize("op", ["warp", "warp_residual"])
def test_bench_warp(benchmark, op, direction, provider):
    benchmark.group = f"{op}-{direction}-{'x'.join(map(str, SIZE))}"
    run = make_case(op, direction, provider)
    result = benchmark(run)
    assert all(torch.isfinite(t).all() for t in (result if isinstance(result, tuple) else (result,)))
