"""The one Python face of mama's custom ops.

The registered ops share one contract per op (docs/design.md, "Custom ops"), each with:
  * a plain-PyTorch reference in `mama.reference` (oracle for the tests, and the fallback),
  * a C++ CPU kernel in the extension `mama._C` (csrc/cpu/<op>.cpp),
  * a Triton kernel for CUDA (mama.kernels.<op>), registered here; `winograd_conv3x3` has none
    (a CPU inference op: on CUDA its reference stands in).
The reference and the Triton launchers check their inputs with `mama.checks`, worded like the
C++ kernels' own checks. `patch_noise` and its helpers at the end are plain PyTorch, not registered ops.
This module defines the public functions, the fake (meta) implementations that let
torch.compile trace the ops without graph breaks, and autograd over the `_<op>_backward` ops.

If the extension is not built, a warning says so and the reference is registered under the
same schemas, so every caller keeps working (slowly).
"""
from __future__ import annotations

import contextlib
import math
import warnings

import torch
from torch import Tensor

from mama import checks, reference
from mama.config import DAMAGE_RANGE, PATCH_GRID
from mama.errors import MamaError

# The schemas as csrc/ops.cpp defines them; used only to register the fallback when the
# extension is missing. tests/ops/test_schemas.py checks that both stay identical.
SCHEMAS = {
    "correlation": "correlation(Tensor a, Tensor b, int pad, int kernel_size, int max_disp, "
    "int stride1, int stride2, float negative_slope) -> Tensor",
    "_correlation_backward": "_correlation_backward(Tensor grad_out, Tensor a, Tensor b, "
    "Tensor out, int pad, int kernel_size, int max_disp, int stride1, int stride2, "
    "float negative_slope) -> (Tensor, Tensor)",
    "warp": "warp(Tensor img, Tensor flow) -> Tensor",
    "_warp_backward": "_warp_backward(Tensor grad_out, Tensor img, Tensor flow) -> (Tensor, Tensor)",
    "warp_residual": "warp_residual(Tensor img0, Tensor img1, Tensor flow) -> (Tensor, Tensor)",
    "_warp_residual_backward": "_warp_residual_backward(Tensor grad_warped, Tensor grad_norm, "
    "Tensor img0, Tensor img1, Tensor flow, Tensor warped, Tensor norm) -> (Tensor, Tensor, Tensor)",
    "bottleneck_sim": "bottleneck_sim(Tensor x4, Tensor y4, Tensor x_y, Tensor z4, Tensor x_z, "
    "float margin) -> (Tensor, Tensor)",
    "_bottleneck_sim_backward": "_bottleneck_sim_backward(Tensor grad_motion, Tensor grad_label, "
    "Tensor x4, Tensor y4, Tensor x_y, Tensor z4, Tensor x_z, float margin) "
    "-> (Tensor, Tensor, Tensor, Tensor, Tensor)",
    "patch_destroy_loss": "patch_destroy_loss(Tensor A, Tensor N, Tensor GT, Tensor G, "
    "Tensor BG, int patch, float ld) -> Tensor",
    "_patch_destroy_loss_backward": "_patch_destroy_loss_backward(Tensor grad, Tensor A, "
    "Tensor N, Tensor GT, Tensor G, Tensor BG, int patch, float ld) -> Tensor",
    "winograd_conv3x3": "winograd_conv3x3(Tensor x, Tensor u, Tensor? bias, int dilation, bool relu) -> Tensor",
}

try:
    from mama import _C  # noqa: F401  (importing it registers the schemas and CPU kernels)

    HAS_EXTENSION = True
except ImportError as _exc:  # pragma: no cover - exercised only on a broken install
    HAS_EXTENSION = False
    warnings.warn(
        f"mama._C is not built ({_exc}); the plain-PyTorch reference ops are used instead. "
        "Build it with `make install` (pip install --no-build-isolation -e .).",
        stacklevel=2,
    )
    _fallback_lib = torch.library.Library("mama", "DEF")
    for _name, _schema in SCHEMAS.items():
        _fallback_lib.define(_schema)
        _fallback_lib.impl(_name, getattr(reference, _name), "CompositeExplicitAutograd")


_reference_depth = 0  # > 0 inside `reference_faces()`


@contextlib.contextmanager
def reference_faces():
    """Inside it the public functions below run their plain-PyTorch reference instead of the
    registered op, so a tracer that knows only standard operators (torch.onnx.export) sees
    their definitions. Forward only; not thread-local: for export, not for scoring."""
    global _reference_depth
    _reference_depth += 1
    try:
        yield
    finally:
        _reference_depth -= 1


def _face(name: str):
    """The op `name` as called now: the registered op, or its reference inside reference_faces()."""
    return getattr(reference, name) if _reference_depth else getattr(torch.ops.mama, name)


def _register_triton(op: str, module: str, impls: dict[str, str]) -> None:
    """Register Triton launchers from mama.kernels.<module> as the CUDA kernels of `op`s.

    `impls` maps an op name (e.g. "correlation", "_correlation_backward") to the launcher's
    name in that module. Triton is imported lazily; without it CUDA tensors use the reference.
    """
    try:
        import importlib

        mod = importlib.import_module(f"mama.kernels.{module}")
    except ImportError as exc:  # pragma: no cover - triton ships with torch on Linux
        warnings.warn(f"Triton kernels for {op} unavailable ({exc}); CUDA uses the reference.")
        for name in impls:
            torch.library.register_kernel(f"mama::{name}", "cuda", getattr(reference, name))
        return
    for name, fn_name in impls.items():
        torch.library.register_kernel(f"mama::{name}", "cuda", getattr(mod, fn_name))


# =============================== correlation ===============================


@torch.library.register_fake("mama::correlation")
def _correlation_fake(a, b, pad, kernel_size, max_disp, stride1, stride2, negative_slope):
    grid = 2 * (max_disp // stride2) + 1
    out_h, out_w = (
        checks.correlation_out_size(n, pad, kernel_size, max_disp, stride1)
        for n in a.shape[-2:]
    )
    return a.new_empty((a.shape[0], grid * grid, out_h, out_w))


@torch.library.register_fake("mama::_correlation_backward")
def _correlation_backward_fake(grad_out, a, b, out, pad, kernel_size, max_disp, stride1,
                               stride2, negative_slope):
    return torch.empty_like(a), torch.empty_like(b)


def _correlation_setup_context(ctx, inputs, output):
    a, b, *params = inputs
    ctx.params = params  # pad, kernel_size, max_disp, stride1, stride2, negative_slope
    ctx.save_for_backward(a, b, output)  # the output carries the LeakyReLU mask


def _correlation_autograd(ctx, grad_out):
    a, b, out = ctx.saved_tensors
    grad_a, grad_b = torch.ops.mama._correlation_backward(
        grad_out.contiguous(), a, b, out, *ctx.params
    )
    return grad_a, grad_b, None, None, None, None, None, None


torch.library.register_autograd(
    "mama::correlation", _correlation_autograd, setup_context=_correlation_setup_context
)
_register_triton(
    "correlation",
    "correlation",
    {"correlation": "correlation_forward", "_correlation_backward": "correlation_backward"},
)


def correlation(a: Tensor, b: Tensor, pad: int = 20, kernel_size: int = 1, max_disp: int = 20,
                stride1: int = 1, stride2: int = 2, negative_slope: float = 1.0) -> Tensor:
    """FlowNetC correlation (cost volume) of two (B, C, H, W) feature maps.

    Output channel dyi * grid + dxi (grid = 2 * (max_disp // stride2) + 1) holds, for the
    displacement (dy, dx) = ((dyi - R) * stride2, (dxi - R) * stride2), R = max_disp // stride2,
    the sum over channels and over a kernel_size x kernel_size window of a(x) * b(x + d) on the
    inputs zero-padded by `pad`, divided by kernel_size**2 * C. The output is
    (B, grid**2, ceil((H + 2*pad - 2*border) / stride1), same for W), border =
    max_disp + (kernel_size - 1) // 2. `negative_slope` != 1 fuses LeakyReLU(negative_slope)
    (FlowNetC uses 0.1). The defaults are FlowNetC's (441 channels, same H and W).
    Differentiable in a and b.
    """
    return _face("correlation")(a, b, pad, kernel_size, max_disp, stride1, stride2,
                                      float(negative_slope))


# =============================== warp, warp_residual ===============================


@torch.library.register_fake("mama::warp")
def _warp_fake(img: Tensor, flow: Tensor) -> Tensor:
    return img.new_empty(img.shape)


@torch.library.register_fake("mama::_warp_backward")
def _warp_backward_fake(grad_out: Tensor, img: Tensor, flow: Tensor) -> tuple[Tensor, Tensor]:
    return img.new_empty(img.shape), flow.new_empty(flow.shape)


@torch.library.register_fake("mama::warp_residual")
def _warp_residual_fake(img0: Tensor, img1: Tensor, flow: Tensor) -> tuple[Tensor, Tensor]:
    batch, _, height, width = img1.shape
    return img1.new_empty(img1.shape), img1.new_empty((batch, 1, height, width))


@torch.library.register_fake("mama::_warp_residual_backward")
def _warp_residual_backward_fake(
    grad_warped: Tensor, grad_norm: Tensor, img0: Tensor, img1: Tensor, flow: Tensor,
    warped: Tensor, norm: Tensor,
) -> tuple[Tensor, Tensor, Tensor]:
    return img0.new_empty(img0.shape), img1.new_empty(img1.shape), flow.new_empty(flow.shape)


def _warp_setup_context(ctx, inputs, output) -> None:
    img, flow = inputs
    ctx.save_for_backward(img, flow)


def _warp_autograd_backward(ctx, grad_out):
    img, flow = ctx.saved_tensors
    if grad_out is None:
        grad_out = torch.zeros_like(img)
    return torch.ops.mama._warp_backward(grad_out, img, flow)


def _warp_residual_setup_context(ctx, inputs, output) -> None:
    img0, img1, flow = inputs
    warped, norm = output
    ctx.save_for_backward(img0, img1, flow, warped, norm)


def _warp_residual_autograd_backward(ctx, grad_warped, grad_norm):
    img0, img1, flow, warped, norm = ctx.saved_tensors
    # An output that did not reach the loss has no gradient: the kernel takes zeros for it.
    if grad_warped is None:
        grad_warped = torch.zeros_like(warped)
    if grad_norm is None:
        grad_norm = torch.zeros_like(norm)
    return torch.ops.mama._warp_residual_backward(
        grad_warped, grad_norm, img0, img1, flow, warped, norm
    )


torch.library.register_autograd(
    "mama::warp", _warp_autograd_backward, setup_context=_warp_setup_context
)
torch.library.register_autograd(
    "mama::warp_residual", _warp_residual_autograd_backward,
    setup_context=_warp_residual_setup_context,
)
_register_triton(
    "warp",
    "warp",
    {
        "warp": "warp_forward",
        "_warp_backward": "warp_backward",
        "warp_residual": "warp_residual_forward",
        "_warp_residual_backward": "warp_residual_backward",
    },
)


def warp(img: Tensor, flow: Tensor) -> Tensor:
    """Bilinear backward warp of `img` (B, C, H, W) by `flow` (B, 2, H, W), in pixels.

    out[b, c, y, x] samples img[b, c] at (x + flow[b, 0, y, x], y + flow[b, 1, y, x]), with
    FlowNet2 Resample2d semantics: the bilinear weights come from the unclamped position and
    each neighbour index is clamped to the image, so points outside it sample the border.
    Differentiable in img and flow.
    """
    return _face("warp")(img, flow)


def warp_residual(img0: Tensor, img1: Tensor, flow: Tensor) -> tuple[Tensor, Tensor]:
    """Warp img1 by flow and measure how far it lands from img0, in one pass.

    Returns (warped, norm): warped = warp(img1, flow) (B, C, H, W) and norm (B, 1, H, W), the
    L2 norm over channels of img0 - warped (FlowNet2's Resample2d + ChannelNorm). The norm's
    gradient is 0 where the norm is 0. Differentiable in img0, img1 and flow.
    """
    return _face("warp_residual")(img0, img1, flow)

# =============================== bottleneck_sim ===============================


@torch.library.register_fake("mama::bottleneck_sim")
def _bottleneck_sim_fake(x4, y4, x_y, z4, x_z, margin):
    for t in (y4, x_y, z4, x_z):
        torch._check(t.shape == x4.shape, lambda: "bottleneck_sim: all five features must share x4's shape")
    return x4.new_empty(x4.shape[0]), x4.new_empty(x4.shape[0])


@torch.library.register_fake("mama::_bottleneck_sim_backward")
def _bottleneck_sim_backward_fake(grad_motion, grad_label, x4, y4, x_y, z4, x_z, margin):
    return tuple(x4.new_empty(x4.shape) for _ in range(5))


def _bottleneck_sim_setup_context(ctx, inputs, output) -> None:
    *features, margin = inputs
    ctx.margin = margin
    ctx.save_for_backward(*features)


def _bottleneck_sim_autograd(ctx, grad_motion, grad_label):
    features = ctx.saved_tensors
    batch = features[0].new_zeros(features[0].shape[0])
    # An output that did not reach the loss has no gradient: the kernel takes zeros for it.
    grads = torch.ops.mama._bottleneck_sim_backward(
        batch if grad_motion is None else grad_motion,
        batch if grad_label is None else grad_label,
        *features,
        ctx.margin,
    )
    return (*grads, None)


torch.library.register_autograd(
    "mama::bottleneck_sim", _bottleneck_sim_autograd, setup_context=_bottleneck_sim_setup_context
)
_register_triton(
    "bottleneck_sim",
    "bottleneck_sim",
    {"bottleneck_sim": "bottleneck_sim_forward", "_bottleneck_sim_backward": "bottleneck_sim_backward"},
)


def bottleneck_sim(x4: Tensor, y4: Tensor, x_y: Tensor, z4: Tensor, x_z: Tensor,
                   margin: float = 0.2) -> tuple[Tensor, Tensor]:
    """The F2LM bottleneck's per-sample sim losses (sim_motion, sim_label), each (B,).

    The five (B, C, h, w) features (frame x4, motion y4, frame->motion x_y, label z4,
    frame->label x_z) are L2-normalised over channels (F.normalize), then per sample
    mean over (C, h) of relu(d(anchor, pos) - d(anchor, neg) + margin) with
    d(u, v) = ||u - v + 1e-6||_2 over the LAST axis (width), as torch.nn.TripletMarginLoss
    computes on 4-D tensors in the paper code. Motion: anchor x_y, pos y4, neg x4; label:
    anchor x_z, pos z4, neg x4. The batch means are the paper's training triplet losses.
    Differentiable in all five features.
    """
    return _face("bottleneck_sim")(x4, y4, x_y, z4, x_z, float(margin))


# =============================== patch_destroy_loss ===============================


@torch.library.register_fake("mama::patch_destroy_loss")
def _patch_destroy_loss_fake(A, N, GT, G, BG, patch, ld):
    checks.patch_destroy_loss(A, N, GT, G, BG, patch)
    return A.new_empty(())


@torch.library.register_fake("mama::_patch_destroy_loss_backward")
def _patch_destroy_loss_backward_fake(grad, A, N, GT, G, BG, patch, ld):
    return G.new_empty(G.shape)


def _patch_destroy_loss_setup_context(ctx, inputs, output) -> None:
    *tensors, patch, ld = inputs
    ctx.params = (patch, ld)
    ctx.save_for_backward(*tensors)


def _patch_destroy_loss_autograd(ctx, grad):
    A, N, GT, G, BG = ctx.saved_tensors
    grad_G = torch.ops.mama._patch_destroy_loss_backward(grad, A, N, GT, G, BG, *ctx.params)
    return None, None, None, grad_G, None, None, None  # only G (the destroyer output) learns


torch.library.register_autograd(
    "mama::patch_destroy_loss", _patch_destroy_loss_autograd,
    setup_context=_patch_destroy_loss_setup_context,
)
_register_triton(
    "patch_destroy_loss",
    "patch_destroy_loss",
    {
        "patch_destroy_loss": "patch_destroy_loss_forward",
        "_patch_destroy_loss_backward": "patch_destroy_loss_backward",
    },
)


def patch_destroy_loss(A: Tensor, N: Tensor, GT: Tensor, G: Tensor, BG: Tensor,
                       patch: int = 32, ld: float = 4.0) -> Tensor:
    """The destroyer's loss, summed over samples and patch x patch tiles (a 0-dim tensor).

    All inputs (B, C, H, W), H and W multiples of `patch`: A the destroyer's input (the
    generator's prediction), N the damaged prediction, GT the real frame, G the destroyer's
    output, BG the background (black, -1). Per tile: diff = min(ld * (1 - SSIM(N, GT)), 1)
    with the common pytorch ssim (Gaussian window min(11, patch), sigma 1.5, valid conv,
    dynamic range picked from N's tile), and
    loss = diff * mean((BG - G)^2) + (1 - diff) * mean((A - G)^2).
    Badly predicted tiles are pushed towards the background. Differentiable in G only.
    """
    return _face("patch_destroy_loss")(A, N, GT, G, BG, int(patch), float(ld))


# =============================== winograd_conv3x3 ===============================
# No autograd and no Triton kernel: on CUDA, cuDNN already picks Winograd where it pays, so the
# inference copies never call it there; the reference stands in so the op holds on any device.
torch.library.register_kernel("mama::winograd_conv3x3", "cuda", reference.winograd_conv3x3)


@torch.library.register_fake("mama::winograd_conv3x3")
def _winograd_conv3x3_fake(x, u, bias, dilation, relu):
    checks.winograd_conv3x3(x, u, bias, dilation)
    return x.new_empty(x.shape[0], u.shape[2], *x.shape[2:]).contiguous(memory_format=torch.channels_last)


def winograd_filter(weight: Tensor, tile: int = 4) -> Tensor:
    """(K, C, 3, 3) conv filters -> the ((tile + 2)^2, C, K) Winograd F(tile x tile, 3x3)
    filters G g G^T that `winograd_conv3x3` takes (tile 2 or 4; computed in float64, rounded
    once to weight's dtype)."""
    if weight.dim() != 4 or weight.shape[-2:] != (3, 3):
        raise ValueError(f"winograd_filter: weight must be (K, C, 3, 3), got {tuple(weight.shape)}")
    if tile not in reference.WINOGRAD_G:
        raise ValueError(f"winograd_filter: tile must be one of {sorted(reference.WINOGRAD_G)}, got {tile}")
    g = torch.tensor(reference.WINOGRAD_G[tile], dtype=torch.float64, device=weight.device)
    u = torch.einsum("ai,kcij,bj->abck", g, weight.detach().double(), g)
    return u.reshape(g.shape[0] ** 2, weight.shape[1], weight.shape[0]).to(weight.dtype).contiguous()


def winograd_conv3x3(x: Tensor, u: Tensor, bias: Tensor | None = None, dilation: int = 1,
                     relu: bool = False) -> Tensor:
    """F.conv2d(x, g, bias, padding=dilation, dilation=dilation) (then ReLU if `relu`) for the
    3x3 filters g with u = winograd_filter(g, tile), by Winograd's F(tile x tile, 3x3): 2.25x
    (tile 2) or 4x (tile 4) fewer multiply-adds than the direct convolution; the tile is read
    off u's shape. x (N, C, H, W) float32 on CPU; returns (N, K, H, W) in channels_last.
    Inference only (not differentiable)."""
    return _face("winograd_conv3x3")(x, u, bias, int(dilation), bool(relu))


# =============================== patch_noise ===============================
# The destroyer's training damage (docs/design.md): the same patch set for the whole batch.
NOISE_KINDS = ("dropout", "blur_weak", "blur_strong", "salt_pepper")
BLUR_SIGMA = {"blur_weak": 1.0, "blur_strong": 3.0}


def random_rate(low: float, high: float, generator: torch.Generator | None = None) -> float:
    """A rate drawn uniformly from [low, high] and rounded to 2 decimals, as the reference
    draws the destroyer's patch rate and dropout probability."""
    return round(low + (high - low) * torch.rand((), generator=generator).item(), 2)


def random_patch_mask(grid: tuple[int, int] = (PATCH_GRID, PATCH_GRID), rate_range: tuple[float, float] = DAMAGE_RANGE,
                      generator: torch.Generator | None = None) -> Tensor:
    """A (rows, cols) bool grid, each patch selected independently with probability `rate`.

    rate = `random_rate(*rate_range)` (the paper: 5-50% of the 8 x 8 grid of 32 x 32 patches
    of a 256 x 256 frame). As in the reference the count is binomial, so it varies around
    rate * rows * cols and can be zero (then nothing is damaged). Deterministic for a seeded
    CPU `generator`.
    """
    rows, cols = grid
    low, high = rate_range
    if rows < 1 or cols < 1 or not 0.0 <= low <= high <= 1.0:
        raise MamaError(
            f"random_patch_mask: grid {grid} must be positive and rate_range {rate_range} "
            "must satisfy 0 <= low <= high <= 1"
        )
    rate = random_rate(low, high, generator)
    return (torch.rand(rows * cols, generator=generator) < rate).view(rows, cols)


def _check_noise_args(x: Tensor, mask: Tensor, kind: str, p: float) -> None:
    if kind not in NOISE_KINDS:
        raise MamaError(f"patch_noise: unknown kind {kind!r}; use one of {', '.join(NOISE_KINDS)}")
    if x.dim() != 4 or mask.dim() != 2 or mask.dtype != torch.bool:
        raise MamaError(
            f"patch_noise: expected x (B,C,H,W) and a 2-D bool mask, got x {tuple(x.shape)} "
            f"and mask {tuple(mask.shape)} {mask.dtype}"
        )
    (height, width), (rows, cols) = x.shape[-2:], mask.shape
    if height % rows or width % cols:
        raise MamaError(
            f"patch_noise: the {rows}x{cols} patch grid must divide the {height}x{width} frame; "
            "pick a grid whose sizes divide H and W"
        )
    if kind == "dropout" and not 0.0 <= p < 1.0:
        raise MamaError(f"patch_noise: dropout needs 0 <= p < 1, got p={p}")
    if kind == "salt_pepper" and not 0.0 <= p <= 1.0:
        raise MamaError(f"patch_noise: salt_pepper needs 0 <= p <= 1, got p={p}")


def _blur_tiles(x: Tensor, tile_h: int, tile_w: int, sigma: float) -> Tensor:
    """Gaussian blur of every tile on its own (reflect padding at the tile's edges)."""
    from torchvision.transforms.v2.functional import gaussian_blur

    B, C, H, W = x.shape
    rows, cols = H // tile_h, W // tile_w
    tiles = x.reshape(B, C, rows, tile_h, cols, tile_w).permute(0, 2, 4, 1, 3, 5)
    tiles = tiles.reshape(-1, C, tile_h, tile_w)
    # 3 sigma each side, but reflect padding needs the half-width below the tile size.
    size = min(2 * math.ceil(3 * sigma) + 1, 2 * min(tile_h, tile_w) - 1)
    blurred = gaussian_blur(tiles, [size, size], [sigma, sigma])
    blurred = blurred.reshape(B, rows, cols, C, tile_h, tile_w).permute(0, 3, 1, 4, 2, 5)
    return blurred.reshape(B, C, H, W)


def patch_noise(x: Tensor, mask: Tensor, kind: str = "dropout", p: float = 0.3,
                seed: int | None = None, generator: torch.Generator | None = None) -> Tensor:
    """Damage the patches of x (B, C, H, W) selected by `mask` (rows, cols), a new tensor.

    The patch size is (H // rows, W // cols); every sample gets the same patch set and the
    unselected pixels are returned bit-for-bit. Kinds:
      dropout      each (sample, patch, channel) zeroed with probability p, the kept ones
                   scaled by 1 / (1 - p) (the paper's damage)
      blur_weak    Gaussian blur, sigma 1, inside each patch (p unused)
      blur_strong  Gaussian blur, sigma 3, inside each patch (p unused)
      salt_pepper  a fraction p of the pixels (all channels) set to +1 or -1, half each
    Random draws come from `generator`, else from a fresh one seeded with `seed`, else from
    torch's global generator; a generator must live on x's device.
    """
    _check_noise_args(x, mask, kind, p)
    if generator is None and seed is not None:
        generator = torch.Generator(device=x.device).manual_seed(seed)
    B, C, H, W = x.shape
    rows, cols = mask.shape
    tile_h, tile_w = H // rows, W // cols
    selected = mask.to(x.device).repeat_interleave(tile_h, 0).repeat_interleave(tile_w, 1)
    if kind == "dropout":
        keep = torch.rand((B, C, rows, cols), generator=generator, device=x.device) >= p
        scale = keep.to(x.dtype) / (1 - p)
        damaged = x * scale.repeat_interleave(tile_h, 2).repeat_interleave(tile_w, 3)
    elif kind == "salt_pepper":
        u = torch.rand((B, 1, H, W), generator=generator, device=x.device)
        damaged = torch.where(u < p / 2, 1.0, torch.where(u < p, -1.0, x)).to(x.dtype)
    else:
        damaged = _blur_tiles(x, tile_h, tile_w, BLUR_SIGMA[kind])
    return torch.where(selected, damaged, x)
