"""Triton kernels of mama::correlation (the FlowNetC cost volume) for CUDA tensors.

Same contract and geometry as csrc/cpu/correlation.cpp and mama.reference.correlation:
output pixel (oy, ox) reads the kernel_size x kernel_size window whose top-left tap is
(oy*stride1 + off, ox*stride1 + off) in unpadded coordinates, off = max_disp - pad; channel
d = dyi*grid + dxi holds displacement ((dyi - R)*stride2, (dxi - R)*stride2). Taps in the
zero padding are masked loads with value 0.

Forward: one program per (batch*output row, block of output columns, displacement), a loop
over window taps and channel blocks. Backward: one program per (batch*input row, block of
columns, block of channels) of one input's gradient, gathering from every output that read
it (no atomics). The launchers also run on CPU tensors under TRITON_INTERPRET=1.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from mama import checks
from mama.kernels import blocks

_MAX_BLOCK_P = 64  # pixels per program
_MAX_BLOCK_G = 256  # displacements per axis (padded to a power of two)
_MAX_TILE = 8192  # elements of the largest (pixels x displacements x channels) tile


@triton.jit
def _correlation_fwd_kernel(
    a_ptr,  # (B, C, H, W), strides sa_*
    b_ptr,  # (B, C, H, W), strides sb_*
    out_ptr,  # (B, G*G, out_h, out_w), contiguous
    slope_ptr,  # (1,) negative_slope in the input dtype
    sa_b, sa_c, sa_h, sa_w,
    sb_b, sb_c, sb_h, sb_w,
    C, H, W, out_h, out_w,
    K, S1, S2, OFF, RADIUS,
    BLOCK_P: tl.constexpr,  # output pixels per program (flattened oy * out_w + ox)
    BLOCK_G: tl.constexpr,  # >= G = 2*RADIUS + 1: every dx of one dy in one program
    BLOCK_C: tl.constexpr,  # channels per step
):
    n = tl.program_id(0)
    pix = tl.program_id(1) * BLOCK_P + tl.arange(0, BLOCK_P)  # (BLOCK_P,)
    dyi = tl.program_id(2)
    oy = pix // out_w
    ox = pix % out_w
    grid = 2 * RADIUS + 1
    dy = (dyi - RADIUS) * S2
    dxi = tl.arange(0, BLOCK_G)  # (BLOCK_G,)
    dx = (dxi - RADIUS) * S2
    cs = tl.arange(0, BLOCK_C)  # (BLOCK_C,)
    acc = tl.zeros([BLOCK_P, BLOCK_G], dtype=out_ptr.dtype.element_ty)
    for j in range(K):
        ya = oy * S1 + OFF + j  # (BLOCK_P,)
        yb = ya + dy
        rows_ok = (pix < out_h * out_w) & (ya >= 0) & (ya < H) & (yb >= 0) & (yb < H)
        for i in range(K):
            xa = ox * S1 + OFF + i  # (BLOCK_P,)
            xb = xa[:, None] + dx[None, :]  # (BLOCK_P, BLOCK_G)
            a_ok = rows_ok & (xa >= 0) & (xa < W)
            b_ok = a_ok[:, None] & (dxi < grid)[None, :] & (xb >= 0) & (xb < W)
            a_pix = n * sa_b + ya * sa_h + xa * sa_w  # (BLOCK_P,)
            b_pix = n * sb_b + yb[:, None] * sb_h + xb * sb_w  # (BLOCK_P, BLOCK_G)
            for c0 in range(0, C, BLOCK_C):
                c = c0 + cs
                c_ok = c < C
                av = tl.load(a_ptr + a_pix[:, None] + c[None, :] * sa_c,
                             mask=a_ok[:, None] & c_ok[None, :], other=0.0)  # (BLOCK_P, BLOCK_C)
                bv = tl.load(b_ptr + b_pix[:, :, None] + c[None, None, :] * sb_c,
                             mask=b_ok[:, :, None] & c_ok[None, None, :], other=0.0)
                acc += tl.sum(av[:, None, :] * bv, axis=2)
    value = acc / (K * K * C)
    slope = tl.load(slope_ptr)
    value = tl.where(value >= 0, value, value * slope)  # fused LeakyReLU (slope 1: identity)
    d = dyi * grid + dxi  # (BLOCK_G,)
    out_off = (n * grid * grid + d[None, :]) * out_h * out_w + pix[:, None]
    tl.store(out_ptr + out_off, value,
             mask=(pix < out_h * out_w)[:, None] & (dxi < grid)[None, :])


@triton.jit
def _correlation_bwd_kernel(
    grad_out_ptr,  # (B, G*G, out_h, out_w), contiguous
    out_ptr,  # (B, G*G, out_h, out_w), contiguous: the forward output (LeakyReLU mask)
    partner_ptr,  # (B, C, H, W), strides sp_*: b for grad_a, a for grad_b
    grad_ptr,  # (B, C, H, W), contiguous: the gradient being computed
    slope_ptr,  # (1,) negative_slope in the input dtype
    sp_b, sp_c, sp_h, sp_w,
    C, H, W, out_h, out_w,
    K, S1, S2, OFF, RADIUS,
    IS_B: tl.constexpr,  # False: grad of a (tap at x, partner b(x + d)); True: grad of b
    BLOCK_P: tl.constexpr,  # input pixels per program (flattened y * W + x)
    BLOCK_G: tl.constexpr,  # >= G: every dx of one dy at once
    BLOCK_C: tl.constexpr,  # channels per program
):
    n = tl.program_id(0)
    pix = tl.program_id(1) * BLOCK_P + tl.arange(0, BLOCK_P)  # (BLOCK_P,)
    c = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)  # (BLOCK_C,)
    y = pix // W
    x = pix % W
    grid = 2 * RADIUS + 1
    dxi = tl.arange(0, BLOCK_G)  # (BLOCK_G,)
    dx = (dxi - RADIUS) * S2
    slope = tl.load(slope_ptr)
    if IS_B:  # this pixel is b(x + d) for a(x) with x = xp: output column from xp
        xp = x[:, None] - dx[None, :]  # (BLOCK_P, BLOCK_G)
        u_base = xp - OFF
    else:  # this pixel is a(x): output column from x, partner b(x + d)
        xp = x[:, None] + dx[None, :]
        u_base = x[:, None] - OFF + 0 * dx[None, :]
    col_ok = (pix < H * W)[:, None] & (dxi < grid)[None, :] & (xp >= 0) & (xp < W)
    c_ok = c < C
    acc = tl.zeros([BLOCK_P, BLOCK_C], dtype=grad_ptr.dtype.element_ty)
    for dyi in range(grid):
        dy = (dyi - RADIUS) * S2
        if IS_B:
            yp = y - dy  # (BLOCK_P,)
            t_base = yp - OFF
        else:
            yp = y + dy
            t_base = y - OFF
        p_ok = col_ok & ((yp >= 0) & (yp < H))[:, None]  # (BLOCK_P, BLOCK_G)
        p_off = n * sp_b + yp[:, None] * sp_h + xp * sp_w
        pv = tl.load(partner_ptr + p_off[:, :, None] + c[None, None, :] * sp_c,
                     mask=p_ok[:, :, None] & c_ok[None, None, :], other=0.0)
        d = dyi * grid + dxi  # (BLOCK_G,)
        for j in range(K):
            t = t_base - j  # = oy * S1 when this row is tap j of output row oy
            oy = tl.maximum(t, 0) // S1  # (BLOCK_P,)
            row_ok = (t >= 0) & (t % S1 == 0) & (oy < out_h)
            for i in range(K):
                u = u_base - i  # = ox * S1 when this column is tap i of output column ox
                ox = tl.maximum(u, 0) // S1  # (BLOCK_P, BLOCK_G)
                g_ok = p_ok & row_ok[:, None] & (u >= 0) & (u % S1 == 0) & (ox < out_w)
                g_off = ((n * grid * grid + d[None, :]) * out_h + oy[:, None]) * out_w + ox
                g = tl.load(grad_out_ptr + g_off, mask=g_ok, other=0.0)  # (BLOCK_P, BLOCK_G)
                o = tl.load(out_ptr + g_off, mask=g_ok, other=0.0)
                g = tl.where(o > 0, g, g * slope)
                acc += tl.sum(g[:, :, None] * pv, axis=1)
    acc = acc / (K * K * C)
    g_off = (n * C + c[None, :]) * H * W + pix[:, None]
    tl.store(grad_ptr + g_off, acc, mask=(pix < H * W)[:, None] & c_ok[None, :])


def _block_sizes(grid: int, channels: int, pixels: int, numel: int) -> tuple[int, int, int]:
    """(BLOCK_P, BLOCK_G, BLOCK_C): one program holds a BLOCK_P x BLOCK_G x BLOCK_C tile."""
    if channels < 1 or pixels < 1:
        raise RuntimeError(f"correlation: empty input (C={channels}, {pixels} pixels)")
    if numel >= 2**31:
        raise RuntimeError(f"correlation: the Triton kernel indexes with int32; {numel} "
                           "elements is too many, split the batch")
    block_g = blocks.block(grid, "correlation", "displacements per axis (lower max_disp // stride2)", _MAX_BLOCK_G - 1)
    block_p = min(blocks.fit(pixels, _MAX_TILE, 4 * block_g), _MAX_BLOCK_P)
    return block_p, block_g, blocks.fit(channels, _MAX_TILE, block_p * block_g)


def correlation_forward(a: Tensor, b: Tensor, pad: int, kernel_size: int, max_disp: int,
                        stride1: int, stride2: int, negative_slope: float) -> Tensor:
    """Launcher with the schema of mama::correlation."""
    out_h, out_w = checks.correlation(a, b, pad, kernel_size, max_disp, stride1, stride2,
                                      negative_slope)
    batch, channels, height, width = a.shape
    radius = max_disp // stride2
    grid = 2 * radius + 1
    out = torch.empty((batch, grid * grid, out_h, out_w), dtype=a.dtype, device=a.device)
    block_p, block_g, block_c = _block_sizes(grid, channels, out_h * out_w,
                                             max(a.numel(), out.numel()))
    slope = torch.full((1,), negative_slope, dtype=a.dtype, device=a.device)
    launch_grid = (batch, triton.cdiv(out_h * out_w, block_p), grid)
    _correlation_fwd_kernel[launch_grid](
        a, b, out, slope,
        *a.stride(), *b.stride(),
        channels, height, width, out_h, out_w,
        kernel_size, stride1, stride2, max_disp - pad, radius,
        BLOCK_P=block_p, BLOCK_G=block_g, BLOCK_C=block_c,
    )
    return out


def correlation_backward(grad_out: Tensor, a: Tensor, b: Tensor, out: Tensor, pad: int,
                         kernel_size: int, max_disp: int, stride1: int, stride2: int,
                         negative_slope: float) -> tuple[Tensor, Tensor]:
    """Launcher with the schema of mama::_correlation_backward: (grad_a, grad_b)."""
    out_h, out_w = checks.correlation_backward(grad_out, a, b, out, pad, kernel_size, max_disp,
                                               stride1, stride2, negative_slope)
    batch, channels, height, width = a.shape
    radius = max_disp // stride2
    grad_out = grad_out.contiguous()
    out = out.contiguous()
    block_p, block_g, block_c = _block_sizes(2 * radius + 1, channels, height * width,
                                             max(a.numel(), out.numel()))
    slope = torch.full((1,), negative_slope, dtype=a.dtype, device=a.device)
    launch_grid = (batch, triton.cdiv(height * width, block_p), triton.cdiv(channels, block_c))
    grads = []
    for partner, is_b in ((b, False), (a, True)):
        grad = torch.empty((batch, channels, height, width), dtype=a.dtype, device=a.device)
        _correlation_bwd_kernel[launch_grid](
            grad_out, out, partner, grad, slope,
            *partner.stride(),
            channels, height, width, out_h, out_w,
            kernel_size, stride1, stride2, max_disp - pad, radius,
            IS_B=is_b, BLOCK_P=block_p, BLOCK_G=block_g, BLOCK_C=block_c,
        )
        grads.append(grad)
    return grads[0], grads[1]
