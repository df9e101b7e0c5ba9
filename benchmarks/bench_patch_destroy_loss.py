"""Benchmarks of mama::patch_destroy_loss on CPU at a real destroyer step: (4, 3, 256, 256)
frames, 32 x 32 patches (256 tiles), forward and forward+backward (gradient to G).

Providers: `ours` (the fused C++ kernel through mama.ops: one call for the whole batch),
`reference` (mama.reference.patch_destroy_loss, the vectorised unfold oracle) and `loop`
(mama.reference.patch_destroy_loss_loop, the paper code's algorithm: a Python loop over every
sample and patch with one small SSIM and two host syncs each). Each direction is one
benchmark group; the loop/ours ratio is the speed-up the brief asks for (>= 20x).
"""
from __future__ import annotations

from typing import Callable

import pytest
import torch

import mama.ops as ops
from mama import reference
from benchmarks import sizes

SIZE = sizes.DESTROY  # (B, C, H, W): batch 4 of 256 x 256 RGB frames in [-1, 1]
PATCH = sizes.DESTROY_PATCH
LD = 4.0
IMPLS = {
    "ours": lambda *t: ops.patch_destroy_loss(*t, patch=PATCH, ld=LD),
    "reference": lambda *t: reference.patch_destroy_loss(*t, PATCH, LD),
    "loop": lambda *t: reference.patch_destroy_loss_loop(*t, PATCH, LD),
}


def destroy_inputs(size=SIZE, patch: int = PATCH) -> tuple[torch.Tensor, ...]:
    """(A, N, GT, G, BG), seeded, as in destroyer training: N is the prediction A with channel
    dropout on some patches, BG black (-1)."""
    gen = torch.Generator().manual_seed(0)
    GT = torch.rand(size, generator=gen) * 2 - 1
    A = (GT + 0.1 * torch.randn(size, generator=gen)).clamp(-1, 1)
    mask = ops.random_patch_mask((size[2] // patch, size[3] // patch), generator=gen)
    N = ops.patch_noise(A, mask, kind="dropout", p=0.3, generator=gen)
    G = torch.tanh(torch.randn(size, generator=gen))
    BG = torch.full(size, -1.0)
    return A, N, GT, G, BG


def make_case(direction: str, provider: str) -> Callable[[], object]:
    """The timed call for one case; the inputs are made once (destroy_inputs)."""
    A, N, GT, G, BG = destroy_inputs()
    fn = IMPLS[provider]
    if direction == "forward":
        return lambda: fn(A, N, GT, G, BG)
    G = G.requires_grad_()
    return lambda: torch.autograd.grad(fn(A, N, GT, G, BG), G)


@pytest.mark.parametrize("provider", ["ours", "reference", "loop"])
@pytest.mark.parametrize("direction", ["forward", "full"])
def test_bench_patch_destroy_loss(benchmark, direction, provider):
    benchmark.group = f"patch_destroy_loss-{direction}-{'x'.join(map(str, SIZE))}-patch{PATCH}"
    result = benchmark(make_case(direction, provider))
    result = result if isinstance(result, tuple) else (result,)
    assert all(torch.isfinite(t).all() for t in result)
