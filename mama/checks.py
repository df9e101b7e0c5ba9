"""The input checks of mama's custom ops: one Python checker per op, called by the plain-PyTorch
reference (mama.reference) and by the Triton launchers (mama.kernels.*).

The C++ CPU kernels (csrc/cpu/<op>.cpp) keep their own checks; these follow them in order and
word their messages like them (shapes as `[1, 3, 4, 5]`, dtypes as c10 names: Float, Double),
so the three backends refuse the same bad input with the same RuntimeError and the same text
(tests/ops/test_input_checks.py). One deliberate difference: the C++ kernel requires CPU tensors,
these require all tensors on one device (the reference and the Triton kernels run on CUDA too).
"""
from __future__ import annotations

import torch
from torch import Tensor

# c10::ScalarType names, as TORCH_CHECK prints a dtype.
_C10_DTYPE_NAMES = {
    torch.float32: "Float", torch.float64: "Double", torch.float16: "Half",
    torch.bfloat16: "BFloat16", torch.int8: "Char", torch.uint8: "Byte", torch.int16: "Short",
    torch.int32: "Int", torch.int64: "Long", torch.bool: "Bool",
    torch.complex64: "ComplexFloat", torch.complex128: "ComplexDouble",
}
FLOATING = (torch.float32, torch.float64)


def dtype_name(dtype: torch.dtype) -> str:
    """`dtype` as the C++ kernels print it (Float, Double, ...)."""
    return _C10_DTYPE_NAMES.get(dtype, str(dtype).removeprefix("torch."))


def sizes(t: Tensor) -> str:
    """`t`'s shape as the C++ kernels print it: [1, 3, 4, 5]."""
    return str(list(t.shape))


def _fail(op: str, message: str) -> None:
    raise RuntimeError(f"{op}: {message}")


def _one_device(op: str, *named: tuple[str, Tensor]) -> None:
    devices = {t.device for _, t in named}
    if len(devices) > 1:
        _fail(op, "tensors on different devices: "
              + ", ".join(f"{name} on {t.device}" for name, t in named))


# =============================== correlation ===============================


def correlation_out_size(size: int, pad: int, kernel_size: int, max_disp: int, stride1: int) -> int:
    """FlowNet's output extent: ceil((size + 2*pad - 2*border) / stride1)."""
    border = max_disp + (kernel_size - 1) // 2
    return -(-(size + 2 * pad - 2 * border) // stride1)


def correlation(a: Tensor, b: Tensor, pad: int, kernel_size: int, max_disp: int, stride1: int,
                stride2: int, negative_slope: float) -> tuple[int, int]:
    """csrc/cpu/correlation.cpp's check_and_measure; returns (out_h, out_w)."""
    op = "correlation"
    if a.dim() != 4:
        _fail(op, f"a must be (B,C,H,W), got {a.dim()} dims")
    if a.shape != b.shape:
        _fail(op, f"a and b must have the same shape, got {sizes(a)} and {sizes(b)}")
    if a.dtype != b.dtype:
        _fail(op, f"a and b must have the same dtype, got {dtype_name(a.dtype)} and {dtype_name(b.dtype)}")
    if a.dtype not in FLOATING:
        _fail(op, f"dtype must be float32 or float64, got {dtype_name(a.dtype)}")
    _one_device(op, ("a", a), ("b", b))
    if kernel_size < 1 or kernel_size % 2 == 0:
        _fail(op, f"kernel_size must be odd and >= 1, got {kernel_size}")
    if pad < 0 or max_disp < 0:
        _fail(op, f"pad and max_disp must be >= 0, got {pad} and {max_disp}")
    if stride1 < 1 or stride2 < 1:
        _fail(op, f"stride1 and stride2 must be >= 1, got {stride1} and {stride2}")
    if negative_slope < 0:
        _fail(op, "negative_slope must be >= 0 (the backward reads the LeakyReLU mask from the "
              f"output), got {negative_slope:g}")
    height, width = a.shape[-2:]
    out_h, out_w = (correlation_out_size(n, pad, kernel_size, max_disp, stride1) for n in (height, width))
    if out_h <= 0 or out_w <= 0:
        _fail(op, f"input {height}x{width} is too small for pad {pad}, max_disp {max_disp} and "
              f"kernel_size {kernel_size} (needs H + 2*pad > 2*(max_disp + (kernel_size-1)/2))")
    if a.shape[1] <= 0:
        _fail(op, "inputs must have at least one channel")
    return out_h, out_w


def correlation_backward(grad_out: Tensor, a: Tensor, b: Tensor, out: Tensor, pad: int,
                         kernel_size: int, max_disp: int, stride1: int, stride2: int,
                         negative_slope: float) -> tuple[int, int]:
    """The forward's checks, then grad_out's and out's; returns (out_h, out_w)."""
    out_h, out_w = correlation(a, b, pad, kernel_size, max_disp, stride1, stride2, negative_slope)
    op = "correlation backward"
    expected = (a.shape[0], (2 * (max_disp // stride2) + 1) ** 2, out_h, out_w)
    if tuple(grad_out.shape) != expected or tuple(out.shape) != expected:
        _fail(op, f"grad_out and out must have shape {' '.join(map(str, expected))}, got "
              f"{sizes(grad_out)} and {sizes(out)}")
    if grad_out.dtype != a.dtype or out.dtype != a.dtype:
        _fail(op, f"grad_out and out must have dtype {dtype_name(a.dtype)}")
    _one_device(op, ("a", a), ("grad_out", grad_out), ("out", out))
    return out_h, out_w


# =============================== warp, warp_residual ===============================


def image_and_flow(op: str, img_name: str, img: Tensor, flow: Tensor) -> None:
    """csrc/cpu/warp.cpp's check_image_and_flow."""
    if img.dim() != 4:
        _fail(op, f"{img_name} must be a 4-D (B, C, H, W) tensor, got shape {sizes(img)}")
    batch, _, height, width = img.shape
    if tuple(flow.shape) != (batch, 2, height, width):
        _fail(op, f"flow must have shape (B, 2, H, W) = ({batch}, 2, {height}, {width}) to match "
              f"{img_name}, got {sizes(flow)}")
    if img.dtype not in FLOATING:
        _fail(op, f"{img_name} must be float32 or float64, got {dtype_name(img.dtype)}")
    if flow.dtype != img.dtype:
        _fail(op, f"flow dtype {dtype_name(flow.dtype)} must match {img_name} dtype {dtype_name(img.dtype)}")
    _one_device(op, (img_name, img), ("flow", flow))


def same_as(op: str, name: str, t: Tensor, like_name: str, like: Tensor) -> None:
    """csrc/cpu/warp.cpp's check_same."""
    if t.shape != like.shape:
        _fail(op, f"{name} must have the shape of {like_name} {sizes(like)}, got {sizes(t)}")
    if t.dtype != like.dtype:
        _fail(op, f"{name} dtype {dtype_name(t.dtype)} must match {like_name} dtype {dtype_name(like.dtype)}")
    _one_device(op, (name, t), (like_name, like))


def warp(img: Tensor, flow: Tensor) -> None:
    image_and_flow("warp", "img", img, flow)


def warp_backward(grad_out: Tensor, img: Tensor, flow: Tensor) -> None:
    image_and_flow("_warp_backward", "img", img, flow)
    same_as("_warp_backward", "grad_out", grad_out, "img", img)


def warp_residual(img0: Tensor, img1: Tensor, flow: Tensor) -> None:
    image_and_flow("warp_residual", "img1", img1, flow)
    same_as("warp_residual", "img0", img0, "img1", img1)


def warp_residual_backward(grad_warped: Tensor, grad_norm: Tensor, img0: Tensor, img1: Tensor,
                           flow: Tensor, warped: Tensor, norm: Tensor) -> None:
    op = "_warp_residual_backward"
    image_and_flow(op, "img1", img1, flow)
    same_as(op, "img0", img0, "img1", img1)
    same_as(op, "warped", warped, "img1", img1)
    same_as(op, "grad_warped", grad_warped, "img1", img1)
    same_as(op, "grad_norm", grad_norm, "norm", norm)
    batch, _, height, width = img1.shape
    if tuple(norm.shape) != (batch, 1, height, width):
        _fail(op, f"norm must have shape (B, 1, H, W), got {sizes(norm)}")


# =============================== bottleneck_sim ===============================
BOTTLENECK_FEATURES = ("x4", "y4", "x_y", "z4", "x_z")


def bottleneck_sim(x4: Tensor, y4: Tensor, x_y: Tensor, z4: Tensor, x_z: Tensor) -> None:
    """csrc/cpu/bottleneck_sim.cpp's check_features."""
    op = "bottleneck_sim"
    if x4.dim() != 4:
        _fail(op, f"x4 must be (B,C,h,w), got {x4.dim()} dims")
    for name, t in zip(BOTTLENECK_FEATURES, (x4, y4, x_y, z4, x_z)):
        _one_device(op, (name, t), ("x4", x4))
        if t.shape != x4.shape:
            _fail(op, f"{name} has shape {sizes(t)}, expected {sizes(x4)} like x4")
        if t.dtype != x4.dtype:
            _fail(op, f"{name} has dtype {dtype_name(t.dtype)}, expected {dtype_name(x4.dtype)} like x4")
    if x4.numel() == 0:
        _fail(op, f"empty features {sizes(x4)}")


def bottleneck_sim_backward(grad_motion: Tensor, grad_label: Tensor, x4: Tensor, y4: Tensor,
                            x_y: Tensor, z4: Tensor, x_z: Tensor) -> None:
    bottleneck_sim(x4, y4, x_y, z4, x_z)
    batch = x4.shape[0]
    for g in (grad_motion, grad_label):
        if g.dim() != 1 or g.shape[0] != batch:
            _fail("bottleneck_sim backward", f"grads must be ({batch},), got {sizes(g)}")
        _one_device("bottleneck_sim backward", ("grad", g), ("x4", x4))


# =============================== patch_destroy_loss ===============================
PATCH_INPUTS = ("A", "N", "GT", "G", "BG")


def patch_destroy_loss(A: Tensor, N: Tensor, GT: Tensor, G: Tensor, BG: Tensor, patch: int) -> None:
    """csrc/cpu/patch_destroy_loss.cpp's check_inputs: one (B,C,H,W) shape and dtype for all
    five, H and W multiples of patch."""
    op = "patch_destroy_loss"
    if A.dim() != 4:
        _fail(op, f"expected (B,C,H,W) tensors, got shape {sizes(A)}")
    for name, t in zip(PATCH_INPUTS, (A, N, GT, G, BG)):
        if t.shape != A.shape:
            _fail(op, f"{name} has shape {sizes(t)}, expected {sizes(A)} like A")
        _one_device(op, (name, t), ("A", A))
        if t.dtype != A.dtype:
            _fail(op, f"{name} has dtype {dtype_name(t.dtype)}, expected {dtype_name(A.dtype)} like A")
    height, width = A.shape[-2:]
    if patch < 1 or height % patch or width % patch:
        _fail(op, f"H and W ({height}x{width}) must be multiples of patch ({patch})")
    if A.numel() == 0:
        _fail(op, f"empty inputs {sizes(A)}")


def patch_destroy_loss_backward(grad: Tensor, A: Tensor, N: Tensor, GT: Tensor, G: Tensor,
                                BG: Tensor, patch: int) -> None:
    patch_destroy_loss(A, N, GT, G, BG, patch)
    if grad.numel() != 1:
        _fail("patch_destroy_loss backward", f"grad must be a scalar, got shape {sizes(grad)}")


# =============================== winograd_conv3x3 ===============================
WINOGRAD_POSITIONS = (16, 36)  # u.shape[0] = (tile + 2) ** 2 for tiles 2 and 4


def winograd_conv3x3(x: Tensor, u: Tensor, bias: Tensor | None, dilation: int) -> None:
    """csrc/cpu/winograd.cpp's checks (it has no Triton kernel: the reference and the fake)."""
    op = "winograd_conv3x3"
    if x.dim() != 4:
        _fail(op, f"x must be (N, C, H, W), got {sizes(x)}")
    if u.dim() != 3 or u.shape[0] not in WINOGRAD_POSITIONS:
        _fail(op, f"u must be (16 or 36, C, K) from winograd_filter, got {sizes(u)}")
    if u.shape[1] != x.shape[1]:
        _fail(op, f"u has {u.shape[1]} input channels, x has {x.shape[1]}")
    if x.dtype != torch.float32 or u.dtype != torch.float32:
        _fail(op, f"float32 only, got x {dtype_name(x.dtype)} and u {dtype_name(u.dtype)}")
    if dilation < 1:
        _fail(op, f"dilation must be >= 1, got {dilation}")
    if bias is not None:
        if bias.dim() != 1 or bias.shape[0] != u.shape[2]:
            _fail(op, f"bias must be ({u.shape[2]}), got {sizes(bias)}")
        if bias.dtype != torch.float32:
            _fail(op, f"bias must be float32, got {dtype_name(bias.dtype)}")
    _one_device(op, ("x", x), ("u", u), *([("bias", bias)] if bias is not None else []))
