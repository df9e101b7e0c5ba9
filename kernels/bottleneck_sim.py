"""Triton kernels of mama::bottleneck_sim and its backward (the CUDA face of the op).

One program per feature row (b, y): it reads every channel of that row, which is all it
needs for the channel L2 norms and for the width-axis triplet distances of rows
(b, c, y, :). The forward writes per-row hinge sums; the launcher reduces them over y.
Semantics: mama.reference.bottleneck_sim (docs/design.md).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from mama import checks
from mama.kernels import blocks

NORM_EPS = 1e-12  # F.normalize's clamp on the channel norm
TRIPLET_EPS = 1e-6  # torch.pairwise_distance's eps on the difference
MAX_WIDTH = 1024


@triton.jit
def _row_inv_norm(ptr, base, C, plane, w, BLOCK_C: tl.constexpr, BLOCK_W: tl.constexpr,
                  NORM_EPS: tl.constexpr):
    """(1 / max(r, eps), r) over channels for the BLOCK_W pixels of one row; r the L2 norm.

    ptr: (B, C, h, w) contiguous; base: offset of (b, 0, y, 0); plane = h * w.
    """
    offs_c = tl.arange(0, BLOCK_C)
    offs_w = tl.arange(0, BLOCK_W)
    acc = tl.zeros((BLOCK_C, BLOCK_W), dtype=ptr.dtype.element_ty)
    for c0 in range(0, C, BLOCK_C):
        cs = c0 + offs_c
        mask = (cs[:, None] < C) & (offs_w[None, :] < w)
        v = tl.load(ptr + base + cs[:, None] * plane + offs_w[None, :], mask=mask, other=0.0)
        acc += v * v
    norm = tl.sqrt(tl.sum(acc, axis=0))
    return 1.0 / tl.maximum(norm, NORM_EPS), norm


@triton.jit
def _normalised_grads(x4_ptr, y4_ptr, xy_ptr, z4_ptr, xz_ptr, offs, mask, row_ok,
                      i_x4, i_y4, i_xy, i_z4, i_xz, g_m, g_l, margin, EPS):
    """Normalised tiles n_* and the gradients gn_* of the per-row hinge sums w.r.t. them.

    offs/mask: (BLOCK_C, BLOCK_W) element offsets and validity; row_ok: (BLOCK_C,) c < C;
    i_*: (BLOCK_W,) inverse norms; g_m, g_l: upstream gradient / (C * h) of this sample.
    """
    n_x4 = tl.load(x4_ptr + offs, mask=mask, other=0.0) * i_x4[None, :]
    n_y4 = tl.load(y4_ptr + offs, mask=mask, other=0.0) * i_y4[None, :]
    n_xy = tl.load(xy_ptr + offs, mask=mask, other=0.0) * i_xy[None, :]
    n_z4 = tl.load(z4_ptr + offs, mask=mask, other=0.0) * i_z4[None, :]
    n_xz = tl.load(xz_ptr + offs, mask=mask, other=0.0) * i_xz[None, :]
    # Motion: anchor x_y, positive y4, negative x4.
    v_pm = tl.where(mask, n_xy - n_y4 + EPS, 0.0)
    v_nm = tl.where(mask, n_xy - n_x4 + EPS, 0.0)
    d_pm = tl.sqrt(tl.sum(v_pm * v_pm, axis=1))
    d_nm = tl.sqrt(tl.sum(v_nm * v_nm, axis=1))
    on_m = row_ok & (d_pm - d_nm + margin > 0)  # relu'(0) = 0
    k_pm = tl.where(on_m & (d_pm > 0), g_m / tl.where(d_pm > 0, d_pm, 1.0), 0.0)
    k_nm = tl.where(on_m & (d_nm > 0), g_m / tl.where(d_nm > 0, d_nm, 1.0), 0.0)
    # Label: anchor x_z, positive z4, negative x4.
    v_pl = tl.where(mask, n_xz - n_z4 + EPS, 0.0)
    v_nl = tl.where(mask, n_xz - n_x4 + EPS, 0.0)
    d_pl = tl.sqrt(tl.sum(v_pl * v_pl, axis=1))
    d_nl = tl.sqrt(tl.sum(v_nl * v_nl, axis=1))
    on_l = row_ok & (d_pl - d_nl + margin > 0)
    k_pl = tl.where(on_l & (d_pl > 0), g_l / tl.where(d_pl > 0, d_pl, 1.0), 0.0)
    k_nl = tl.where(on_l & (d_nl > 0), g_l / tl.where(d_nl > 0, d_nl, 1.0), 0.0)
    gn_xy = k_pm[:, None] * v_pm - k_nm[:, None] * v_nm
    gn_xz = k_pl[:, None] * v_pl - k_nl[:, None] * v_nl
    gn_y4 = -k_pm[:, None] * v_pm
    gn_z4 = -k_pl[:, None] * v_pl
    gn_x4 = k_nm[:, None] * v_nm + k_nl[:, None] * v_nl
    return n_x4, n_y4, n_xy, n_z4, n_xz, gn_x4, gn_y4, gn_xy, gn_z4, gn_xz


@triton.jit
def _bottleneck_sim_fwd_kernel(
    x4_ptr, y4_ptr, xy_ptr, z4_ptr, xz_ptr,  # (B, C, h, w) contiguous features
    params_ptr,  # (2,) margin, triplet eps in the features' dtype (float args would be fp32)
    partial_ptr,  # (2, B * h): per-row hinge sums, motion then label
    C, h, w, rows,
    BLOCK_C: tl.constexpr, BLOCK_W: tl.constexpr, NORM_EPS: tl.constexpr,
):
    row = tl.program_id(0)
    margin = tl.load(params_ptr)
    EPS = tl.load(params_ptr + 1)
    b = row // h
    y = row % h
    plane = h * w
    base = b * C * plane + y * w
    i_x4, _ = _row_inv_norm(x4_ptr, base, C, plane, w, BLOCK_C, BLOCK_W, NORM_EPS)
    i_y4, _ = _row_inv_norm(y4_ptr, base, C, plane, w, BLOCK_C, BLOCK_W, NORM_EPS)
    i_xy, _ = _row_inv_norm(xy_ptr, base, C, plane, w, BLOCK_C, BLOCK_W, NORM_EPS)
    i_z4, _ = _row_inv_norm(z4_ptr, base, C, plane, w, BLOCK_C, BLOCK_W, NORM_EPS)
    i_xz, _ = _row_inv_norm(xz_ptr, base, C, plane, w, BLOCK_C, BLOCK_W, NORM_EPS)
    offs_c = tl.arange(0, BLOCK_C)
    offs_w = tl.arange(0, BLOCK_W)
    motion = tl.zeros((BLOCK_C,), dtype=x4_ptr.dtype.element_ty)
    label = tl.zeros((BLOCK_C,), dtype=x4_ptr.dtype.element_ty)
    for c0 in range(0, C, BLOCK_C):
        cs = c0 + offs_c
        row_ok = cs < C
        mask = row_ok[:, None] & (offs_w[None, :] < w)
        offs = base + cs[:, None] * plane + offs_w[None, :]
        n_x4 = tl.load(x4_ptr + offs, mask=mask, other=0.0) * i_x4[None, :]
        n_y4 = tl.load(y4_ptr + offs, mask=mask, other=0.0) * i_y4[None, :]
        n_xy = tl.load(xy_ptr + offs, mask=mask, other=0.0) * i_xy[None, :]
        n_z4 = tl.load(z4_ptr + offs, mask=mask, other=0.0) * i_z4[None, :]
        n_xz = tl.load(xz_ptr + offs, mask=mask, other=0.0) * i_xz[None, :]
        v_pm = tl.where(mask, n_xy - n_y4 + EPS, 0.0)
        v_nm = tl.where(mask, n_xy - n_x4 + EPS, 0.0)
        v_pl = tl.where(mask, n_xz - n_z4 + EPS, 0.0)
        v_nl = tl.where(mask, n_xz - n_x4 + EPS, 0.0)
        hinge_m = tl.sqrt(tl.sum(v_pm * v_pm, axis=1)) - tl.sqrt(tl.sum(v_nm * v_nm, axis=1)) + margin
        hinge_l = tl.sqrt(tl.sum(v_pl * v_pl, axis=1)) - tl.sqrt(tl.sum(v_nl * v_nl, axis=1)) + margin
        motion += tl.where(row_ok, tl.maximum(hinge_m, 0.0), 0.0)
        label += tl.where(row_ok, tl.maximum(hinge_l, 0.0), 0.0)
    tl.store(partial_ptr + row, tl.sum(motion, axis=0))
    tl.store(partial_ptr + rows + row, tl.sum(label, axis=0))


@triton.jit
def _bottleneck_sim_bwd_kernel(
    grad_m_ptr, grad_l_ptr,  # (B,) upstream gradients of sim_motion, sim_label
    x4_ptr, y4_ptr, xy_ptr, z4_ptr, xz_ptr,  # (B, C, h, w) contiguous features
    gx4_ptr, gy4_ptr, gxy_ptr, gz4_ptr, gxz_ptr,  # (B, C, h, w) gradients, written here
    params_ptr,  # (2,) margin, triplet eps in the features' dtype (float args would be fp32)
    C, h, w,
    BLOCK_C: tl.constexpr, BLOCK_W: tl.constexpr, NORM_EPS: tl.constexpr,
):
    row = tl.program_id(0)
    margin = tl.load(params_ptr)
    EPS = tl.load(params_ptr + 1)
    b = row // h
    y = row % h
    plane = h * w
    base = b * C * plane + y * w
    i_x4, r_x4 = _row_inv_norm(x4_ptr, base, C, plane, w, BLOCK_C, BLOCK_W, NORM_EPS)
    i_y4, r_y4 = _row_inv_norm(y4_ptr, base, C, plane, w, BLOCK_C, BLOCK_W, NORM_EPS)
    i_xy, r_xy = _row_inv_norm(xy_ptr, base, C, plane, w, BLOCK_C, BLOCK_W, NORM_EPS)
    i_z4, r_z4 = _row_inv_norm(z4_ptr, base, C, plane, w, BLOCK_C, BLOCK_W, NORM_EPS)
    i_xz, r_xz = _row_inv_norm(xz_ptr, base, C, plane, w, BLOCK_C, BLOCK_W, NORM_EPS)
    count = C * h
    g_m = tl.load(grad_m_ptr + b) / count
    g_l = tl.load(grad_l_ptr + b) / count
    offs_c = tl.arange(0, BLOCK_C)
    offs_w = tl.arange(0, BLOCK_W)
    # Pass 1: <gn, n> over channels per pixel, for each feature.
    dot_x4 = tl.zeros((BLOCK_W,), dtype=x4_ptr.dtype.element_ty)
    dot_y4 = tl.zeros((BLOCK_W,), dtype=x4_ptr.dtype.element_ty)
    dot_xy = tl.zeros((BLOCK_W,), dtype=x4_ptr.dtype.element_ty)
    dot_z4 = tl.zeros((BLOCK_W,), dtype=x4_ptr.dtype.element_ty)
    dot_xz = tl.zeros((BLOCK_W,), dtype=x4_ptr.dtype.element_ty)
    for c0 in range(0, C, BLOCK_C):
        cs = c0 + offs_c
        row_ok = cs < C
        mask = row_ok[:, None] & (offs_w[None, :] < w)
        offs = base + cs[:, None] * plane + offs_w[None, :]
        n_x4, n_y4, n_xy, n_z4, n_xz, gn_x4, gn_y4, gn_xy, gn_z4, gn_xz = _normalised_grads(
            x4_ptr, y4_ptr, xy_ptr, z4_ptr, xz_ptr, offs, mask, row_ok,
            i_x4, i_y4, i_xy, i_z4, i_xz, g_m, g_l, margin, EPS)
        dot_x4 += tl.sum(gn_x4 * n_x4, axis=0)
        dot_y4 += tl.sum(gn_y4 * n_y4, axis=0)
        dot_xy += tl.sum(gn_xy * n_xy, axis=0)
        dot_z4 += tl.sum(gn_z4 * n_z4, axis=0)
        dot_xz += tl.sum(gn_xz * n_xz, axis=0)
    # Through n = t / max(r, eps): (gn - n <gn, n>) / r where r >= eps, else gn / eps.
    dot_x4 = tl.where(r_x4 >= NORM_EPS, dot_x4, 0.0)
    dot_y4 = tl.where(r_y4 >= NORM_EPS, dot_y4, 0.0)
    dot_xy = tl.where(r_xy >= NORM_EPS, dot_xy, 0.0)
    dot_z4 = tl.where(r_z4 >= NORM_EPS, dot_z4, 0.0)
    dot_xz = tl.where(r_xz >= NORM_EPS, dot_xz, 0.0)
    # Pass 2: recompute gn (cheaper than storing it) and write the input gradients.
    for c0 in range(0, C, BLOCK_C):
        cs = c0 + offs_c
        row_ok = cs < C
        mask = row_ok[:, None] & (offs_w[None, :] < w)
        offs = base + cs[:, None] * plane + offs_w[None, :]
        n_x4, n_y4, n_xy, n_z4, n_xz, gn_x4, gn_y4, gn_xy, gn_z4, gn_xz = _normalised_grads(
            x4_ptr, y4_ptr, xy_ptr, z4_ptr, xz_ptr, offs, mask, row_ok,
            i_x4, i_y4, i_xy, i_z4, i_xz, g_m, g_l, margin, EPS)
        tl.store(gx4_ptr + offs, (gn_x4 - n_x4 * dot_x4[None, :]) * i_x4[None, :], mask=mask)
        tl.store(gy4_ptr + offs, (gn_y4 - n_y4 * dot_y4[None, :]) * i_y4[None, :], mask=mask)
        tl.store(gxy_ptr + offs, (gn_xy - n_xy * dot_xy[None, :]) * i_xy[None, :], mask=mask)
        tl.store(gz4_ptr + offs, (gn_z4 - n_z4 * dot_z4[None, :]) * i_z4[None, :], mask=mask)
        tl.store(gxz_ptr + offs, (gn_xz - n_xz * dot_xz[None, :]) * i_xz[None, :], mask=mask)


def _block_sizes(channels: int, width: int, budget: int) -> tuple[int, int]:
    """(BLOCK_C, BLOCK_W): the whole width in one tile, channels up to `budget` elements."""
    block_w = blocks.block(width, "bottleneck_sim", "width", MAX_WIDTH)
    return blocks.fit(channels, budget, block_w), block_w


def _features(*features: Tensor) -> list[Tensor]:
    return [t.contiguous() for t in features]


def _params(margin: float, like: Tensor) -> Tensor:
    return torch.tensor([margin, TRIPLET_EPS], dtype=like.dtype, device=like.device)


def bottleneck_sim_forward(x4: Tensor, y4: Tensor, x_y: Tensor, z4: Tensor, x_z: Tensor,
                           margin: float) -> tuple[Tensor, Tensor]:
    checks.bottleneck_sim(x4, y4, x_y, z4, x_z)
    feats = _features(x4, y4, x_y, z4, x_z)
    B, C, h, w = x4.shape
    block_c, block_w = _block_sizes(C, w, budget=2048)
    partial = torch.empty((2, B * h), dtype=x4.dtype, device=x4.device)
    _bottleneck_sim_fwd_kernel[(B * h,)](
        *feats, _params(margin, x4), partial, C, h, w, B * h,
        BLOCK_C=block_c, BLOCK_W=block_w, NORM_EPS=NORM_EPS,
    )
    sims = partial.view(2, B, h).sum(-1) / (C * h)
    return sims[0], sims[1]


def bottleneck_sim_backward(grad_motion: Tensor, grad_label: Tensor, x4: Tensor, y4: Tensor,
                            x_y: Tensor, z4: Tensor, x_z: Tensor,
                            margin: float) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    checks.bottleneck_sim_backward(grad_motion, grad_label, x4, y4, x_y, z4, x_z)
    feats = _features(x4, y4, x_y, z4, x_z)
    B, C, h, w = x4.shape
    block_c, block_w = _block_sizes(C, w, budget=1024)
    grads = [torch.empty(x4.shape, dtype=x4.dtype, device=x4.device) for _ in range(5)]
    _bottleneck_sim_bwd_kernel[(B * h,)](
        grad_motion.to(x4.dtype).contiguous(), grad_label.to(x4.dtype).contiguous(),
        *feats, *grads, _params(margin, x4), C, h, w,
        BLOCK_C=block_c, BLOCK_W=block_w, NORM_EPS=NORM_EPS,
    )
    return tuple(grads)
