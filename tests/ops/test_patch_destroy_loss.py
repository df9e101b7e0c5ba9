"""mama::patch_destroy_loss: C++ CPU kernel and Triton launchers against the plain-PyTorch
reference, the reference against the per-patch loop and an independent SciPy SSIM."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from mama import ops, reference
from tests.support import TRITON_DEVICE, assert_close, poisoned_empty
from benchmarks import sizes

# (B, C, H, W, patch)
SHAPES = [
    (1, 1, 4, 4, 4),  # minimal: one tile, window 4 -> a single SSIM position
    (2, 3, 24, 40, 8),  # 3 x 5 tiles, window 8 (even, off-centre Gaussian)
    (3, 2, 32, 16, 16),  # batch 3, H != W, full 11 x 11 window
    (1, 3, 20, 15, 5),  # odd patch, odd tile grid
]
REAL_SHAPE = (*sizes.DESTROY, sizes.DESTROY_PATCH)  # the real destroyer step: batch 4, 64 tiles of 32 x 32 each
# dtype with its tolerance against the reference
DTYPES = [(torch.float32, dict(rtol=1e-5, atol=1e-4)), (torch.float64, dict(rtol=1e-10, atol=1e-10))]
# Every small shape in both dtypes; the real shape in float32 (float64 autograd of the
# reference is slow there and adds nothing).
CASES = [(s, *d) for s in SHAPES for d in DTYPES] + [(REAL_SHAPE, *DTYPES[0])]
LD = 4.0


def make_inputs(shape, dtype, seed, scale=1.0, offset=0.0, layout="contiguous"):
    """A, N, GT, G, BG for a destroyer step: N is GT damaged by a per-tile noise level, so
    some tiles have diff < 1 and others are clamped to 1; values in offset + scale * [-1, 1]."""
    B, C, H, W, patch = shape
    gen = torch.Generator().manual_seed(seed)
    rand = lambda *s: torch.rand(*s, generator=gen, dtype=torch.float64)  # noqa: E731
    GT = rand(B, C, H, W) * 2 - 1
    level = rand(B, 1, H // patch, W // patch) ** 3  # mostly small noise, a few large
    level = level.repeat_interleave(patch, 2).repeat_interleave(patch, 3)
    N = (GT + level * (rand(B, C, H, W) * 2 - 1)).clamp(-1, 1)
    A, G, BG = (rand(B, C, H, W) * 2 - 1 for _ in range(3))
    out = [(t * scale + offset).to(dtype) for t in (A, N, GT, G, BG)]
    if layout == "permuted":
        out = [t.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2) for t in out]
    return out


@pytest.mark.parametrize("shape,dtype,tol", CASES)
def test_forward_and_grad_match_reference(shape, dtype, tol):
    A, N, GT, G, BG = make_inputs(shape, dtype, seed=1)
    gen = torch.Generator().manual_seed(2)
    upstream = torch.randn((), generator=gen, dtype=dtype)
    G_leaf = G.clone().requires_grad_()
    with poisoned_empty():
        loss = ops.patch_destroy_loss(A, N, GT, G_leaf, BG, patch=shape[-1], ld=LD)
        loss.backward(upstream)
    assert loss.shape == () and loss.dtype == dtype
    assert_close(loss.detach(), reference.patch_destroy_loss(A, N, GT, G, BG, shape[-1], LD), tol)
    want = reference._patch_destroy_loss_backward(upstream, A, N, GT, G, BG, shape[-1], LD)
    assert_close(G_leaf.grad, want, tol)


# The SSIM dynamic range is picked per tile from N: (scale, offset) of the inputs and the L
# that the tiles get.
RANGES = [
    (0.5, 0.5),  # [0, 1]: L = 1
    (1.0, 0.0),  # [-1, 1]: L = 2
    (127.5, 127.5),  # [0, 255]: L = 255
    (128.0, 127.0),  # [-1, 255]: L = 256
]


@pytest.mark.parametrize("scale,offset", RANGES)
def test_dynamic_range_matches_reference(scale, offset):
    shape = (2, 3, 16, 32, 16)
    A, N, GT, G, BG = make_inputs(shape, torch.float64, seed=3, scale=scale, offset=offset)
    want = reference.patch_destroy_loss(A, N, GT, G, BG, 16, LD)
    got = torch.ops.mama.patch_destroy_loss(A, N, GT, G, BG, 16, LD)
    torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)
    grad = torch.ops.mama._patch_destroy_loss_backward(torch.tensor(1.0, dtype=torch.float64), A, N,
                                                       GT, G, BG, 16, LD)
    torch.testing.assert_close(
        grad, reference._patch_destroy_loss_backward(torch.tensor(1.0, dtype=torch.float64), A, N,
                                                     GT, G, BG, 16, LD),
        atol=1e-10, rtol=1e-10)


def _scipy_ssim(img1: np.ndarray, img2: np.ndarray, L: float) -> float:
    """SSIM of (C, p, p) arrays with SciPy's Gaussian filter (sigma 1.5, radius 5), keeping only
    the positions whose 11 x 11 window lies inside (= the valid conv)."""
    filt = lambda t: gaussian_filter(t, sigma=1.5, truncate=5 / 1.5)[5:-5, 5:-5]  # noqa: E731
    values = []
    for x, y in zip(img1, img2):
        mu1, mu2 = filt(x), filt(y)
        s11, s22, s12 = filt(x * x) - mu1**2, filt(y * y) - mu2**2, filt(x * y) - mu1 * mu2
        c1, c2 = (0.01 * L) ** 2, (0.03 * L) ** 2
        values.append(((2 * mu1 * mu2 + c1) * (2 * s12 + c2)) / ((mu1**2 + mu2**2 + c1) * (s11 + s22 + c2)))
    return float(np.mean(values))


def test_matches_independent_scipy_ssim():
    patch = 16
    A, N, GT, G, BG = make_inputs((2, 3, 32, 16, patch), torch.float64, seed=4)
    want = 0.0
    for b in range(2):
        for top in range(0, 32, patch):
            a, n, gt, g, bg = (t[b, :, top : top + patch, :].numpy() for t in (A, N, GT, G, BG))
            L = 2.0 if n.min() < -0.5 else 1.0  # N stays below 128: max_val 1
            diff = min(LD * (1 - _scipy_ssim(n, gt, L)), 1.0)
            want += diff * np.mean((bg - g) ** 2) + (1 - diff) * np.mean((a - g) ** 2)
    got = ops.patch_destroy_loss(A, N, GT, G, BG, patch=patch, ld=LD)
    assert abs(got.item() - want) < 1e-10


def test_reference_equals_per_patch_loop():
    args = make_inputs((2, 3, 16, 24, 8), torch.float64, seed=5)
    torch.testing.assert_close(reference.patch_destroy_loss(*args, 8, LD),
                               reference.patch_destroy_loss_loop(*args, 8, LD))


def test_perfect_prediction_is_pushed_to_its_input():
    """N == GT gives SSIM 1, diff 0: the loss is the plain MSE of G against A, per tile."""
    A, _, GT, G, BG = make_inputs((2, 3, 16, 16, 8), torch.float64, seed=6)
    got = ops.patch_destroy_loss(A, GT, GT, G, BG, patch=8, ld=LD)
    want = ((A - G) ** 2).mean() * 2 * 4  # the sum of 8 equal-sized tile means
    torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("dtype,tol", DTYPES)
def test_permuted_inputs(dtype, tol):
    shape = (2, 3, 16, 24, 8)
    args = make_inputs(shape, dtype, seed=7, layout="permuted")
    assert not args[0].is_contiguous()
    assert_close(torch.ops.mama.patch_destroy_loss(*args, 8, LD),
                 reference.patch_destroy_loss(*args, 8, LD), tol)
    one = torch.tensor(1.0, dtype=dtype)
    assert_close(torch.ops.mama._patch_destroy_loss_backward(one, *args, 8, LD),
                 reference._patch_destroy_loss_backward(one, *args, 8, LD), tol)


def test_only_G_gets_gradient():
    A, N, GT, G, BG = (t.requires_grad_() for t in make_inputs((1, 3, 8, 8, 8), torch.float64, seed=8))
    ops.patch_destroy_loss(A, N, GT, G, BG, patch=8).backward()
    assert G.grad is not None and torch.isfinite(G.grad).all()
    assert A.grad is None and N.grad is None and GT.grad is None and BG.grad is None


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gradcheck(seed):
    A, N, GT, G, BG = make_inputs((2, 2, 8, 4, 4), torch.float64, seed=seed)
    G.requires_grad_()
    assert torch.autograd.gradcheck(lambda g: ops.patch_destroy_loss(A, N, GT, g, BG, patch=4), (G,))


def test_opcheck():
    A, N, GT, G, BG = make_inputs((1, 2, 8, 4, 4), torch.float64, seed=9)
    G.requires_grad_()
    torch.library.opcheck(torch.ops.mama.patch_destroy_loss.default, (A, N, GT, G, BG, 4, LD))


def test_bad_inputs_raise():
    A, N, GT, G, BG = make_inputs((1, 3, 16, 16, 8), torch.float32, seed=10)
    with pytest.raises(RuntimeError, match=r"H and W \(16x16\) must be multiples of patch \(5\)"):
        ops.patch_destroy_loss(A, N, GT, G, BG, patch=5)
    with pytest.raises(RuntimeError, match=r"BG has shape .* expected .* like A"):
        ops.patch_destroy_loss(A, N, GT, G, BG[:, :2], patch=8)
    with pytest.raises(RuntimeError, match=r"GT has dtype Double, expected Float like A"):
        ops.patch_destroy_loss(A, N, GT.double(), G, BG, patch=8)
    with pytest.raises(RuntimeError, match=r"expected \(B,C,H,W\) tensors"):
        ops.patch_destroy_loss(A[0], N[0], GT[0], G[0], BG[0], patch=8)
    with pytest.raises(RuntimeError, match=r"grad must be a scalar"):
        torch.ops.mama._patch_destroy_loss_backward(torch.ones(2), A, N, GT, G, BG, 8, LD)


TRITON_SHAPES = [
    (1, 3, 8, 16, 8),  # two tiles, window 8
    (1, 2, 12, 12, 12),  # one tile, the full 11 x 11 window (two valid positions a side)
]


@pytest.mark.triton
@pytest.mark.parametrize("dtype,tol", DTYPES)
@pytest.mark.parametrize("shape", TRITON_SHAPES)
def test_triton_matches_reference(shape, dtype, tol):
    from mama.kernels.patch_destroy_loss import (
        patch_destroy_loss_backward,
        patch_destroy_loss_forward,
    )

    args = make_inputs(shape, dtype, seed=11, layout="permuted")
    upstream = torch.tensor(0.7, dtype=dtype)
    on = [t.to(TRITON_DEVICE) for t in args]
    with poisoned_empty():
        loss = patch_destroy_loss_forward(*on, shape[-1], LD)
        grad_G = patch_destroy_loss_backward(upstream.to(TRITON_DEVICE), *on, shape[-1], LD)
    assert_close(loss.cpu(), reference.patch_destroy_loss(*args, shape[-1], LD), tol)
    assert_close(grad_G.cpu(), reference._patch_destroy_loss_backward(upstream, *args, shape[-1], LD), tol)


@pytest.mark.triton
def test_triton_channel_blocks(monkeypatch):
    """A block budget of one channel makes the kernels loop over channel blocks."""
    from mama.kernels import patch_destroy_loss as kernels

    monkeypatch.setattr(kernels, "TILE_BUDGET", 16)
    args = make_inputs((1, 3, 4, 8, 4), torch.float64, seed=12)
    assert kernels._block_sizes(4, 3)["CH_P"] == 1
    one = torch.tensor(1.0, dtype=torch.float64)
    on = [t.to(TRITON_DEVICE) for t in args]
    torch.testing.assert_close(kernels.patch_destroy_loss_forward(*on, 4, LD).cpu(),
                               reference.patch_destroy_loss(*args, 4, LD))
    torch.testing.assert_close(kernels.patch_destroy_loss_backward(one.to(TRITON_DEVICE), *on, 4, LD).cpu(),
                               reference._patch_destroy_loss_backward(one, *args, 4, LD))


@pytest.mark.triton
def test_triton_rejects_large_patches():
    from mama.kernels.patch_destroy_loss import patch_destroy_loss_forward

    args = [t.to(TRITON_DEVICE) for t in make_inputs((1, 1, 128, 128, 128), torch.float32, seed=13)]
    with pytest.raises(RuntimeError, match="patch 128 > 64 is unsupported"):
        patch_destroy_loss_forward(*args, 128, LD)


@pytest.mark.compile
def test_torch_compile_fullgraph_matches_eager():
    def loss(A, N, GT, G, BG):
        return ops.patch_destroy_loss(A, N, GT, torch.tanh(G), BG, patch=4) * 0.5

    A, N, GT, G, BG = make_inputs((1, 2, 8, 8, 4), torch.float32, seed=14)
    g_eager, g_compiled = G.clone().requires_grad_(), G.clone().requires_grad_()
    want = loss(A, N, GT, g_eager, BG)
    got = torch.compile(loss, fullgraph=True, backend="aot_eager")(A, N, GT, g_compiled, BG)
    torch.testing.assert_close(got, want)
    want.backward()
    got.backward()
    torch.testing.assert_close(g_compiled.grad, g_eager.grad)
