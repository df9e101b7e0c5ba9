"""Triton kernels of mama::patch_destroy_loss and its backward (the CUDA face of the op).

One program per (sample, patch) tile: the tile's dynamic range from N, its SSIM(N, GT)
(valid Gaussian conv computed directly over the window offsets, which stay in cache), then
the two MSE terms (forward) or the gradient to G (backward). The whole batch is one launch;
the launcher sums the per-tile losses. Semantics: mama.reference.patch_destroy_loss.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from mama import checks
from mama.kernels import blocks
from mama.reference import SSIM_WINDOW, ssim_window

MAX_PATCH = 64  # a tile is held in registers
TILE_BUDGET = 4096  # elements of one (channels x rows, columns) block


@triton.jit
def _channel_tile(C, H, W, SIZE, c0, CH_BLOCK: tl.constexpr, BLOCK: tl.constexpr):
    """Offsets (from a tile's channel-0 top-left) and validity of a SIZE x SIZE square in
    CH_BLOCK channels from c0 on, as one 2-D block: rows = (channel, row) pairs, cols = columns.
    """
    rows = tl.arange(0, CH_BLOCK * BLOCK)
    c = c0 + rows // BLOCK
    i = rows % BLOCK
    j = tl.arange(0, BLOCK)
    offs = (c * H * W + i * W)[:, None] + j[None, :]
    valid = ((c < C) & (i < SIZE))[:, None] & (j < SIZE)[None, :]
    return offs, valid


@triton.jit
def _tile_diff(n_ptr, gt_ptr, win_ptr, origin, C, H, W, P, ld,
               WS: tl.constexpr, BLOCK_P: tl.constexpr, CH_P: tl.constexpr,
               BLOCK_V: tl.constexpr, CH_V: tl.constexpr):
    """min(ld * (1 - SSIM(N_tile, GT_tile)), 1) for the tile whose (channel 0) top-left is `origin`.

    n_ptr, gt_ptr: (B, C, H, W) contiguous; win_ptr: (WS,) normalised 1-D Gaussian.
    Channels go CH_P (CH_V) at a time through blocks of BLOCK_P (BLOCK_V) square rows.
    """
    # Dynamic range from N's tile; masked lanes repeat the tile's first value.
    first = tl.load(n_ptr + origin)
    hi = tl.zeros((CH_P * BLOCK_P, BLOCK_P), dtype=n_ptr.dtype.element_ty) + first
    lo = hi
    for c0 in range(0, C, CH_P):
        offs, valid = _channel_tile(C, H, W, P, c0, CH_P, BLOCK_P)
        v = tl.load(n_ptr + origin + offs, mask=valid, other=0.0)
        hi = tl.maximum(hi, tl.where(valid, v, first))
        lo = tl.minimum(lo, tl.where(valid, v, first))
    hi_s = tl.max(tl.max(hi, axis=1), axis=0)
    lo_s = tl.min(tl.min(lo, axis=1), axis=0)
    L = (tl.where(hi_s > 128.0, 255.0, 1.0) - tl.where(lo_s < -0.5, -1.0, 0.0)).to(hi.dtype)
    c1 = (0.01 * L) * (0.01 * L)
    c2 = (0.03 * L) * (0.03 * L)

    # Valid Gaussian conv: each output position accumulates its WS x WS window directly.
    V = P - WS + 1
    ssim_acc = tl.zeros((CH_V * BLOCK_V, BLOCK_V), dtype=n_ptr.dtype.element_ty)
    for c0 in range(0, C, CH_V):
        offs, valid = _channel_tile(C, H, W, V, c0, CH_V, BLOCK_V)
        mu1 = tl.zeros((CH_V * BLOCK_V, BLOCK_V), dtype=n_ptr.dtype.element_ty)
        mu2 = tl.zeros((CH_V * BLOCK_V, BLOCK_V), dtype=n_ptr.dtype.element_ty)
        exx = tl.zeros((CH_V * BLOCK_V, BLOCK_V), dtype=n_ptr.dtype.element_ty)
        eyy = tl.zeros((CH_V * BLOCK_V, BLOCK_V), dtype=n_ptr.dtype.element_ty)
        exy = tl.zeros((CH_V * BLOCK_V, BLOCK_V), dtype=n_ptr.dtype.element_ty)
        for dy in range(0, WS):
            g_y = tl.load(win_ptr + dy)
            for dx in range(0, WS):
                wgt = g_y * tl.load(win_ptr + dx)
                at = origin + dy * W + dx + offs
                x = tl.load(n_ptr + at, mask=valid, other=0.0)
                y = tl.load(gt_ptr + at, mask=valid, other=0.0)
                mu1 += wgt * x
                mu2 += wgt * y
                exx += wgt * x * x
                eyy += wgt * y * y
                exy += wgt * x * y
        s11 = exx - mu1 * mu1
        s22 = eyy - mu2 * mu2
        s12 = exy - mu1 * mu2
        ssim_map = ((2 * mu1 * mu2 + c1) * (2 * s12 + c2)) / (
            (mu1 * mu1 + mu2 * mu2 + c1) * (s11 + s22 + c2))
        ssim_acc += tl.where(valid, ssim_map, 0.0)
    ssim = tl.sum(tl.sum(ssim_acc, axis=1), axis=0) / (C * V * V)
    return tl.minimum(ld * (1.0 - ssim), 1.0)


@triton.jit
def _tile_origin(tile, C, H, W, P):
    """Offset of the (channel 0) top-left pixel of tile number `tile` (sample-major)."""
    cols = W // P
    per_image = (H // P) * cols
    b = tile // per_image
    rc = tile % per_image
    return b * C * H * W + (rc // cols) * P * W + (rc % cols) * P


@triton.jit
def _patch_destroy_loss_fwd_kernel(
    a_ptr, n_ptr, gt_ptr, g_ptr, bg_ptr,  # (B, C, H, W) contiguous
    win_ptr,  # (WS,) 1-D Gaussian window
    ld_ptr,  # () ld in the inputs' dtype (a float argument would be fp32)
    loss_ptr,  # (B * H/P * W/P,) per-tile loss
    C, H, W, P,
    WS: tl.constexpr, BLOCK_P: tl.constexpr, CH_P: tl.constexpr,
    BLOCK_V: tl.constexpr, CH_V: tl.constexpr,
):
    tile_id = tl.program_id(0)
    origin = _tile_origin(tile_id, C, H, W, P)
    diff = _tile_diff(n_ptr, gt_ptr, win_ptr, origin, C, H, W, P, tl.load(ld_ptr),
                      WS, BLOCK_P, CH_P, BLOCK_V, CH_V)
    sum_bg = tl.zeros((CH_P * BLOCK_P, BLOCK_P), dtype=g_ptr.dtype.element_ty)
    sum_a = tl.zeros((CH_P * BLOCK_P, BLOCK_P), dtype=g_ptr.dtype.element_ty)
    for c0 in range(0, C, CH_P):
        offs, valid = _channel_tile(C, H, W, P, c0, CH_P, BLOCK_P)
        at = origin + offs
        g = tl.load(g_ptr + at, mask=valid, other=0.0)
        d_bg = tl.load(bg_ptr + at, mask=valid, other=0.0) - g
        d_a = tl.load(a_ptr + at, mask=valid, other=0.0) - g
        sum_bg += d_bg * d_bg
        sum_a += d_a * d_a
    count = C * P * P
    mse_bg = tl.sum(tl.sum(sum_bg, axis=1), axis=0) / count
    mse_a = tl.sum(tl.sum(sum_a, axis=1), axis=0) / count
    tl.store(loss_ptr + tile_id, diff * mse_bg + (1.0 - diff) * mse_a)


@triton.jit
def _patch_destroy_loss_bwd_kernel(
    grad_ptr,  # () upstream gradient of the summed loss
    a_ptr, n_ptr, gt_ptr, g_ptr, bg_ptr,  # (B, C, H, W) contiguous
    win_ptr,  # (WS,) 1-D Gaussian window
    ld_ptr,  # () ld in the inputs' dtype (a float argument would be fp32)
    grad_g_ptr,  # (B, C, H, W) gradient to G, written here
    C, H, W, P,
    WS: tl.constexpr, BLOCK_P: tl.constexpr, CH_P: tl.constexpr,
    BLOCK_V: tl.constexpr, CH_V: tl.constexpr,
):
    tile_id = tl.program_id(0)
    origin = _tile_origin(tile_id, C, H, W, P)
    diff = _tile_diff(n_ptr, gt_ptr, win_ptr, origin, C, H, W, P, tl.load(ld_ptr),
                      WS, BLOCK_P, CH_P, BLOCK_V, CH_V)
    scale = 2.0 * tl.load(grad_ptr) / (C * P * P)
    w_bg = scale * diff
    w_a = scale * (1.0 - diff)
    for c0 in range(0, C, CH_P):
        offs, valid = _channel_tile(C, H, W, P, c0, CH_P, BLOCK_P)
        at = origin + offs
        g = tl.load(g_ptr + at, mask=valid, other=0.0)
        bg = tl.load(bg_ptr + at, mask=valid, other=0.0)
        a = tl.load(a_ptr + at, mask=valid, other=0.0)
        tl.store(grad_g_ptr + at, w_bg * (g - bg) + w_a * (g - a), mask=valid)


def _block_sizes(patch: int, channels: int) -> dict[str, int]:
    """WS and the blocks: a square side padded to a power of two, and how many channels fit
    in one block of TILE_BUDGET elements (at least one, at most all of them)."""
    window = min(SSIM_WINDOW, patch)
    block_p = blocks.block(patch, "patch_destroy_loss", "patch", MAX_PATCH)
    block_v = max(2, blocks.block(patch - window + 1, "patch_destroy_loss", "SSIM positions"))  # no 1-wide blocks
    return {"WS": window, "BLOCK_P": block_p, "CH_P": blocks.fit(channels, TILE_BUDGET, block_p**2),
            "BLOCK_V": block_v, "CH_V": blocks.fit(channels, TILE_BUDGET, block_v**2)}


def _prepare(A, N, GT, G, BG, patch, ld):
    """Contiguous inputs (checked by the caller), the window, ld as a tensor, the tile count,
    block sizes."""
    blocks = _block_sizes(patch, A.shape[1])
    win = ssim_window(blocks["WS"], A.dtype, A.device)
    ld_t = torch.tensor(ld, dtype=A.dtype, device=A.device)
    B, _, H, W = A.shape
    tiles = B * (H // patch) * (W // patch)
    return [t.contiguous() for t in (A, N, GT, G, BG)], win, ld_t, tiles, blocks


def patch_destroy_loss_forward(A: Tensor, N: Tensor, GT: Tensor, G: Tensor, BG: Tensor,
                               patch: int, ld: float) -> Tensor:
    checks.patch_destroy_loss(A, N, GT, G, BG, patch)
    inputs, win, ld_t, tiles, blocks = _prepare(A, N, GT, G, BG, patch, ld)
    _, C, H, W = A.shape
    tile_loss = torch.empty(tiles, dtype=A.dtype, device=A.device)
    _patch_destroy_loss_fwd_kernel[(tiles,)](
        *inputs, win, ld_t, tile_loss, C, H, W, patch,
        **blocks, num_warps=8,
    )
    return tile_loss.sum()


def patch_destroy_loss_backward(grad: Tensor, A: Tensor, N: Tensor, GT: Tensor, G: Tensor,
                                BG: Tensor, patch: int, ld: float) -> Tensor:
    checks.patch_destroy_loss_backward(grad, A, N, GT, G, BG, patch)
    inputs, win, ld_t, tiles, blocks = _prepare(A, N, GT, G, BG, patch, ld)
    _, C, H, W = A.shape
    grad_G = torch.empty(G.shape, dtype=G.dtype, device=G.device)
    _patch_destroy_loss_bwd_kernel[(tiles,)](
        grad.to(A.dtype).reshape(()).contiguous(), *inputs, win, ld_t, grad_G, C, H, W, patch,
        **blocks, num_warps=8,
    )
    return grad_G
