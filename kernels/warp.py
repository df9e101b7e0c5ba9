"""Triton kernels of mama::warp and mama::warp_residual and their backward ops (CUDA).

Bilinear backward warp with FlowNet2 Resample2d semantics (weights from the unclamped
fractional position, each neighbour index clamped to the image); warp_residual also writes
the per-pixel L2 norm over channels of img0 - warped in the same pass. One program handles a
block of pixels and loops over the channels, so a pixel's taps are computed once. The image
gradient is a scatter-add, done with atomics into a zeroed buffer.

The host launchers have exactly the signatures of the op schemas (csrc/ops.cpp); mama/ops.py
registers them for CUDA; they check their inputs with mama.checks, as the reference does.
On CPU tensors they run under TRITON_INTERPRET=1 (tests only).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from mama import checks


@triton.jit
def _taps(flow_ptr, pixel, mask, H, W):
    """Each pixel's batch index and in-plane index, the flat plane indices of the four
    neighbours of its sample point, and (alpha, beta).

    flow_ptr: (B, 2, H, W) contiguous flow; pixel: (BLOCK,) int64 index into B*H*W.
    """
    hw = H * W
    b = pixel // hw
    rem = pixel % hw
    y = rem // W
    x = rem % W
    fx = tl.load(flow_ptr + b * 2 * hw + rem, mask=mask, other=0.0)
    fy = tl.load(flow_ptr + b * 2 * hw + hw + rem, mask=mask, other=0.0)
    px = x.to(fx.dtype) + fx
    py = y.to(fy.dtype) + fy
    x0 = tl.floor(px)
    y0 = tl.floor(py)
    alpha = px - x0  # unclamped, as Resample2d
    beta = py - y0
    # Clamp in floating point before the cast (keeps it defined), then the integer pair again
    # so that even a NaN flow can never index outside the plane.
    xi = tl.minimum(tl.maximum(x0, -1.0), W - 1.0).to(tl.int64)
    yi = tl.minimum(tl.maximum(y0, -1.0), H - 1.0).to(tl.int64)
    left = tl.minimum(tl.maximum(xi, 0), W - 1)
    right = tl.minimum(tl.maximum(xi + 1, 0), W - 1)
    top = tl.minimum(tl.maximum(yi, 0), H - 1)
    bottom = tl.minimum(tl.maximum(yi + 1, 0), H - 1)
    return b, rem, top * W + left, top * W + right, bottom * W + left, bottom * W + right, alpha, beta


@triton.jit
def _bilinear_weights(alpha, beta):
    """Weights of the top-left, top-right, bottom-left, bottom-right neighbours."""
    return (1 - alpha) * (1 - beta), alpha * (1 - beta), (1 - alpha) * beta, alpha * beta


@triton.jit
def _warp_fwd_kernel(
    img_ptr,  # (B, C, H, W) contiguous: the image sampled (img, or img1 of warp_residual)
    flow_ptr,  # (B, 2, H, W) contiguous: flow in pixels, channel 0 = x, 1 = y
    img0_ptr,  # (B, C, H, W) contiguous: residual reference img0, read only when RESIDUAL
    out_ptr,  # (B, C, H, W) contiguous: warped output
    norm_ptr,  # (B, 1, H, W) contiguous: |img0 - warped| over C, written only when RESIDUAL
    n_pixels,  # B * H * W
    C, H, W,
    RESIDUAL: tl.constexpr,
    BLOCK: tl.constexpr,
):
    pixel = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = pixel < n_pixels
    b, rem, tl_i, tr_i, bl_i, br_i, alpha, beta = _taps(flow_ptr, pixel, mask, H, W)
    w_tl, w_tr, w_bl, w_br = _bilinear_weights(alpha, beta)
    hw = H * W
    squares = tl.zeros_like(alpha)
    for c in range(C):
        plane = (b * C + c) * hw
        v = w_tl * tl.load(img_ptr + plane + tl_i, mask=mask, other=0.0)
        v += w_tr * tl.load(img_ptr + plane + tr_i, mask=mask, other=0.0)
        v += w_bl * tl.load(img_ptr + plane + bl_i, mask=mask, other=0.0)
        v += w_br * tl.load(img_ptr + plane + br_i, mask=mask, other=0.0)
        tl.store(out_ptr + plane + rem, v, mask=mask)
        if RESIDUAL:
            d = tl.load(img0_ptr + plane + rem, mask=mask, other=0.0) - v
            squares += d * d
    if RESIDUAL:
        tl.store(norm_ptr + pixel, tl.sqrt(squares), mask=mask)


@triton.jit
def _warp_bwd_kernel(
    grad_ptr,  # (B, C, H, W) contiguous: upstream gradient of warped
    img_ptr,  # (B, C, H, W) contiguous: the image that was sampled
    flow_ptr,  # (B, 2, H, W) contiguous
    grad_img_ptr,  # (B, C, H, W) contiguous, zeroed: scatter-add target for the image gradient
    grad_flow_ptr,  # (B, 2, H, W) contiguous: flow gradient
    grad_norm_ptr,  # (B, 1, H, W) contiguous: upstream gradient of norm (RESIDUAL only)
    img0_ptr,  # (B, C, H, W) contiguous: img0 (RESIDUAL only)
    warped_ptr,  # (B, C, H, W) contiguous: saved forward output warped (RESIDUAL only)
    norm_ptr,  # (B, 1, H, W) contiguous: saved forward output norm (RESIDUAL only)
    grad_img0_ptr,  # (B, C, H, W) contiguous: gradient of img0 (RESIDUAL only)
    n_pixels,  # B * H * W
    C, H, W,
    RESIDUAL: tl.constexpr,
    BLOCK: tl.constexpr,
):
    pixel = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = pixel < n_pixels
    b, rem, tl_i, tr_i, bl_i, br_i, alpha, beta = _taps(flow_ptr, pixel, mask, H, W)
    w_tl, w_tr, w_bl, w_br = _bilinear_weights(alpha, beta)
    hw = H * W
    if RESIDUAL:
        # d|d|/dd = d / |d|; where the norm is 0 its gradient is defined as 0.
        norm = tl.load(norm_ptr + pixel, mask=mask, other=1.0)
        grad_norm = tl.load(grad_norm_ptr + pixel, mask=mask, other=0.0)
        safe_norm = tl.where(norm > 0, norm, 1.0)
        scale = tl.where(norm > 0, grad_norm / safe_norm, 0.0)
    gx = tl.zeros_like(alpha)
    gy = tl.zeros_like(alpha)
    for c in range(C):
        plane = (b * C + c) * hw
        g = tl.load(grad_ptr + plane + rem, mask=mask, other=0.0)
        if RESIDUAL:
            d = tl.load(img0_ptr + plane + rem, mask=mask, other=0.0)
            d -= tl.load(warped_ptr + plane + rem, mask=mask, other=0.0)
            g_img0 = scale * d
            tl.store(grad_img0_ptr + plane + rem, g_img0, mask=mask)
            g -= g_img0  # the norm pulls warped the opposite way it pulls img0
        v_tl = tl.load(img_ptr + plane + tl_i, mask=mask, other=0.0)
        v_tr = tl.load(img_ptr + plane + tr_i, mask=mask, other=0.0)
        v_bl = tl.load(img_ptr + plane + bl_i, mask=mask, other=0.0)
        v_br = tl.load(img_ptr + plane + br_i, mask=mask, other=0.0)
        # d alpha / d flow_x = 1 everywhere, also where the indices were clamped.
        gx += g * ((1 - beta) * (v_tr - v_tl) + beta * (v_br - v_bl))
        gy += g * ((1 - alpha) * (v_bl - v_tl) + alpha * (v_br - v_tr))
        tl.atomic_add(grad_img_ptr + plane + tl_i, w_tl * g, mask=mask)
        tl.atomic_add(grad_img_ptr + plane + tr_i, w_tr * g, mask=mask)
        tl.atomic_add(grad_img_ptr + plane + bl_i, w_bl * g, mask=mask)
        tl.atomic_add(grad_img_ptr + plane + br_i, w_br * g, mask=mask)
    tl.store(grad_flow_ptr + b * 2 * hw + rem, gx, mask=mask)
    tl.store(grad_flow_ptr + b * 2 * hw + hw + rem, gy, mask=mask)


def _launch_config(img: Tensor) -> tuple[int, int]:
    """(BLOCK pixels per program, num_warps)."""
    if img.device.type == "cpu":
        return 1024, 4  # interpreter: fewer, larger programs run faster
    return 256, 4


def _forward(img0: Tensor | None, img: Tensor, flow: Tensor):
    block, num_warps = _launch_config(img)
    img, flow = img.contiguous(), flow.contiguous()
    batch, channels, height, width = img.shape
    out = torch.empty_like(img)
    residual = img0 is not None
    # Without RESIDUAL the kernel never touches img0 and norm: pass placeholders, return None.
    norm = img.new_empty((batch, 1, height, width)) if residual else out
    img0 = img0.contiguous() if residual else img
    n_pixels = batch * height * width
    if n_pixels > 0:
        grid = (triton.cdiv(n_pixels, block),)
        _warp_fwd_kernel[grid](
            img, flow, img0, out, norm, n_pixels, channels, height, width,
            RESIDUAL=residual, BLOCK=block, num_warps=num_warps,
        )
    return out, (norm if residual else None)


def _backward(grad: Tensor, img: Tensor, flow: Tensor, residual_args=None):
    block, num_warps = _launch_config(img)
    grad, img, flow = grad.contiguous(), img.contiguous(), flow.contiguous()
    batch, channels, height, width = img.shape
    grad_img = torch.zeros_like(img)  # atomics accumulate into it
    grad_flow = torch.empty_like(flow)
    if residual_args is None:
        grad_norm = img0 = warped = norm = grad_img0 = grad  # unused placeholders
    else:
        grad_norm, img0, warped, norm = (t.contiguous() for t in residual_args)
        grad_img0 = torch.empty_like(img)
    n_pixels = batch * height * width
    if n_pixels > 0:
        grid = (triton.cdiv(n_pixels, block),)
        _warp_bwd_kernel[grid](
            grad, img, flow, grad_img, grad_flow, grad_norm, img0, warped, norm, grad_img0,
            n_pixels, channels, height, width,
            RESIDUAL=residual_args is not None, BLOCK=block, num_warps=num_warps,
        )
    return grad_img, grad_flow, grad_img0


def warp_forward(img: Tensor, flow: Tensor) -> Tensor:
    """mama::warp on CUDA."""
    checks.warp(img, flow)
    return _forward(None, img, flow)[0]


def warp_backward(grad_out: Tensor, img: Tensor, flow: Tensor) -> tuple[Tensor, Tensor]:
    """mama::_warp_backward on CUDA: (grad_img, grad_flow)."""
    checks.warp_backward(grad_out, img, flow)
    grad_img, grad_flow, _ = _backward(grad_out, img, flow)
    return grad_img, grad_flow


def warp_residual_forward(img0: Tensor, img1: Tensor, flow: Tensor) -> tuple[Tensor, Tensor]:
    """mama::warp_residual on CUDA: (warped, norm)."""
    checks.warp_residual(img0, img1, flow)
    return _forward(img0, img1, flow)


def warp_residual_backward(
    grad_warped: Tensor, grad_norm: Tensor, img0: Tensor, img1: Tensor, flow: Tensor,
    warped: Tensor, norm: Tensor,
) -> tuple[Tensor, Tensor, Tensor]:
    """mama::_warp_residual_backward on CUDA: (grad_img0, grad_img1, grad_flow)."""
    checks.warp_residual_backward(grad_warped, grad_norm, img0, img1, flow, warped, norm)
    grad_img1, grad_flow, grad_img0 = _backward(
        grad_warped, img1, flow, residual_args=(grad_norm, img0, warped, norm)
    )
    return grad_img0, grad_img1, grad_flow
