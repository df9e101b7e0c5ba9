"""Plain-PyTorch versions of every mama op, written for clarity, not speed.

They are the oracle of the tests and the fallback when the C++ extension is not built.
Each function has exactly the signature of its op's schema in csrc/ops.cpp. The
`_<op>_backward` references take the vector-Jacobian product of the forward reference
with torch.autograd, so forward and backward can never disagree.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mama import checks


def _vjp(fn, inputs: tuple[Tensor, ...], grads: tuple[Tensor, ...], wrt: tuple[int, ...]):
    """Gradients of fn(*inputs) (a tensor or tuple) against grads, for the inputs in `wrt`."""
    with torch.enable_grad():
        leaves = [x.detach().requires_grad_(i in wrt) for i, x in enumerate(inputs)]
        outs = fn(*leaves)
        outs = outs if isinstance(outs, tuple) else (outs,)
        pairs = [(o, g) for o, g in zip(outs, grads) if g is not None]
        got = torch.autograd.grad(
            [o for o, _ in pairs], [leaves[i] for i in wrt], [g for _, g in pairs],
            allow_unused=True,
        )
    return tuple(
        torch.zeros_like(inputs[i]) if g is None else g for i, g in zip(wrt, got)
    )


# =============================== correlation ===============================


def correlation(a: Tensor, b: Tensor, pad: int, kernel_size: int, max_disp: int, stride1: int,
                stride2: int, negative_slope: float) -> Tensor:
    """FlowNetC cost volume from shifted products, one row of displacements at a time.

    On the zero-padded inputs, cropped to where every displacement stays inside the padding,
    the channel sum of a * (b shifted by (dy, dx)) is taken for all dx of one dy at once
    (an unfold of b's rows). A kernel_size x kernel_size average pool with stride `stride1`
    then gives the window means (window o starts at padded position max_disp + o*stride1,
    i.e. is centred on o*stride1 + border). Channel dyi*grid + dxi holds the displacement
    (dy, dx) = ((dyi - R)*stride2, (dxi - R)*stride2), R = max_disp // stride2.
    """
    checks.correlation(a, b, pad, kernel_size, max_disp, stride1, stride2, negative_slope)
    radius = max_disp // stride2
    grid = 2 * radius + 1
    ap = F.pad(a, [pad] * 4)
    bp = F.pad(b, [pad] * 4)
    height, width = ap.shape[-2] - 2 * max_disp, ap.shape[-1] - 2 * max_disp
    a_crop = ap[..., max_disp:max_disp + height, max_disp:max_disp + width].unsqueeze(3)
    x_first = max_disp - radius * stride2  # column where displacement dxi = 0 starts
    rows = []
    for dyi in range(grid):
        y0 = max_disp + (dyi - radius) * stride2
        # (B, C, height, grid, width): window dxi starts at column x_first + dxi*stride2.
        shifted = bp[..., y0:y0 + height, x_first:].unfold(3, width, stride2)[:, :, :, :grid]
        rows.append((a_crop * shifted).sum(1))  # (B, height, grid, width)
    volume = torch.stack(rows, 1).transpose(2, 3).flatten(1, 2)  # (B, grid*grid, height, width)
    # avg_pool divides by kernel_size^2; the channel count completes FlowNet's normalisation.
    out = F.avg_pool2d(volume, kernel_size, stride=stride1) / a.shape[1]
    return F.leaky_relu(out, negative_slope)


def _correlation_backward(grad_out: Tensor, a: Tensor, b: Tensor, out: Tensor, pad: int,
                          kernel_size: int, max_disp: int, stride1: int, stride2: int,
                          negative_slope: float) -> tuple[Tensor, Tensor]:
    """Gradients for a and b (`out` is not needed here: autograd recomputes the mask)."""
    checks.correlation_backward(grad_out, a, b, out, pad, kernel_size, max_disp, stride1, stride2,
                                negative_slope)
    def forward(x, y):
        return correlation(x, y, pad, kernel_size, max_disp, stride1, stride2, negative_slope)

    return _vjp(forward, (a, b), (grad_out,), (0, 1))


# =============================== warp, warp_residual ===============================


def _bilinear_taps(flow: Tensor, height: int, width: int):
    """Flat indices of the four neighbours and the bilinear weights, FlowNet2 Resample2d style.

    For each output pixel (y, x) the sample point is (x + flow_x, y + flow_y). The weights
    come from the UNCLAMPED fractional part; the neighbour indices floor and floor + 1 are
    each clamped to the image, so far outside it the border pixels are sampled.
    Returns (indices, weights): lists of four (B, H*W) tensors, ordered
    top-left, top-right, bottom-left, bottom-right.
    """
    batch = flow.shape[0]
    ys = torch.arange(height, dtype=flow.dtype, device=flow.device).view(1, height, 1)
    xs = torch.arange(width, dtype=flow.dtype, device=flow.device).view(1, 1, width)
    px = xs + flow[:, 0]  # (B, H, W) sample positions
    py = ys + flow[:, 1]
    x0 = torch.floor(px)
    y0 = torch.floor(py)
    alpha = px - x0  # floor has zero gradient, so d(alpha)/d(flow_x) = 1
    beta = py - y0
    left = x0.clamp(0, width - 1).long()
    right = (x0 + 1).clamp(0, width - 1).long()
    top = y0.clamp(0, height - 1).long()
    bottom = (y0 + 1).clamp(0, height - 1).long()
    indices = [top * width + left, top * width + right, bottom * width + left, bottom * width + right]
    weights = [(1 - alpha) * (1 - beta), alpha * (1 - beta), (1 - alpha) * beta, alpha * beta]
    return [i.reshape(batch, -1) for i in indices], [w.reshape(batch, -1) for w in weights]


def warp(img: Tensor, flow: Tensor) -> Tensor:
    """Bilinear backward warp: out[b, c, y, x] = img[b, c] sampled at (x + flow_x, y + flow_y)."""
    checks.warp(img, flow)
    batch, channels, height, width = img.shape
    indices, weights = _bilinear_taps(flow, height, width)
    planes = img.reshape(batch, channels, height * width)
    out = torch.zeros_like(planes)
    for index, weight in zip(indices, weights):
        taps = torch.gather(planes, 2, index.unsqueeze(1).expand(batch, channels, -1))
        out = out + weight.unsqueeze(1) * taps
    return out.reshape(batch, channels, height, width)


def _warp_backward(grad_out: Tensor, img: Tensor, flow: Tensor) -> tuple[Tensor, Tensor]:
    checks.warp_backward(grad_out, img, flow)
    return _vjp(warp, (img, flow), (grad_out,), wrt=(0, 1))


def warp_residual(img0: Tensor, img1: Tensor, flow: Tensor) -> tuple[Tensor, Tensor]:
    """(warped, norm): warped = warp(img1, flow); norm = L2 norm over channels of img0 - warped.

    linalg.vector_norm's gradient is 0 where the norm is 0, the convention every face keeps.
    """
    checks.warp_residual(img0, img1, flow)
    warped = warp(img1, flow)
    norm = torch.linalg.vector_norm(img0 - warped, ord=2, dim=1, keepdim=True)
    return warped, norm


def _warp_residual_backward(
    grad_warped: Tensor, grad_norm: Tensor, img0: Tensor, img1: Tensor, flow: Tensor,
    warped: Tensor, norm: Tensor,
) -> tuple[Tensor, Tensor, Tensor]:
    # warped and norm are the saved forward outputs the kernels reuse; the oracle recomputes.
    checks.warp_residual_backward(grad_warped, grad_norm, img0, img1, flow, warped, norm)
    return _vjp(warp_residual, (img0, img1, flow), (grad_warped, grad_norm), wrt=(0, 1, 2))


# =============================== bottleneck_sim ===============================
TRIPLET_EPS = 1e-6  # torch.pairwise_distance's eps, added to the difference before the norm


def _triplet_terms(anchor: Tensor, positive: Tensor, negative: Tensor, margin: float) -> Tensor:
    """Per-sample mean of relu(d(a, p) - d(a, n) + margin); d is the L2 norm over the LAST axis.

    This is what torch.nn.TripletMarginLoss computes on 4-D (B,C,h,w) tensors (the paper
    code's usage): the distance is taken over width, the mean over (C, h) per sample here.
    """
    d_pos = torch.pairwise_distance(anchor, positive, p=2, eps=TRIPLET_EPS)  # (B,C,h)
    d_neg = torch.pairwise_distance(anchor, negative, p=2, eps=TRIPLET_EPS)
    return torch.relu(d_pos - d_neg + margin).flatten(1).mean(1)


def bottleneck_sim(
    x4: Tensor, y4: Tensor, x_y: Tensor, z4: Tensor, x_z: Tensor, margin: float
) -> tuple[Tensor, Tensor]:
    """(sim_motion, sim_label), each (B,): triplet hinges on channel-L2-normalised features."""
    checks.bottleneck_sim(x4, y4, x_y, z4, x_z)
    x4, y4, x_y, z4, x_z = (F.normalize(t, dim=1) for t in (x4, y4, x_y, z4, x_z))
    sim_motion = _triplet_terms(x_y, y4, x4, margin)  # anchor x_y, positive y4, negative x4
    sim_label = _triplet_terms(x_z, z4, x4, margin)  # anchor x_z, positive z4, negative x4
    return sim_motion, sim_label


def _bottleneck_sim_backward(
    grad_motion: Tensor, grad_label: Tensor, x4: Tensor, y4: Tensor, x_y: Tensor, z4: Tensor,
    x_z: Tensor, margin: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    checks.bottleneck_sim_backward(grad_motion, grad_label, x4, y4, x_y, z4, x_z)
    return _vjp(
        lambda *t: bottleneck_sim(*t, margin), (x4, y4, x_y, z4, x_z), (grad_motion, grad_label),
        wrt=(0, 1, 2, 3, 4),
    )


# =============================== patch_destroy_loss ===============================
SSIM_WINDOW = 11  # Gaussian window size (shrunk to the patch size for smaller patches)
SSIM_SIGMA = 1.5


def ssim_window(size: int, dtype=torch.float32, device=None) -> Tensor:
    """1-D Gaussian (sigma 1.5) centred at size // 2, normalised to sum 1."""
    x = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-(x**2) / (2 * SSIM_SIGMA**2))
    return (g / g.sum()).to(dtype=dtype, device=device)


def _ssim_range(n_patches: Tensor) -> Tensor:
    """Dynamic range L per patch, picked from img1 (N) like the common pytorch ssim.

    max_val = 255 if max > 128 else 1; min_val = -1 if min < -0.5 else 0; L = max - min.
    `n_patches` is (P, ...); returns (P,).
    """
    flat = n_patches.flatten(1)
    max_val = torch.where(flat.amax(1) > 128, 255.0, 1.0)
    min_val = torch.where(flat.amin(1) < -0.5, -1.0, 0.0)
    return (max_val - min_val).to(n_patches.dtype)


def _ssim(img1: Tensor, img2: Tensor, L) -> Tensor:
    """SSIM per image of (P,C,p,p) batches with dynamic range L (a float or a (P,1,1,1) tensor).

    Valid (unpadded) depthwise conv with the 2-D Gaussian window min(11, p); the mean of
    the SSIM map over channels and positions.
    """
    channels, size = img1.shape[1], min(SSIM_WINDOW, img1.shape[-2], img1.shape[-1])
    g = ssim_window(size, img1.dtype, img1.device)
    window = torch.outer(g, g).expand(channels, 1, size, size)
    conv = lambda t: F.conv2d(t, window, groups=channels)  # noqa: E731
    mu1, mu2 = conv(img1), conv(img2)
    sigma1_sq = conv(img1 * img1) - mu1 * mu1
    sigma2_sq = conv(img2 * img2) - mu2 * mu2
    sigma12 = conv(img1 * img2) - mu1 * mu2
    c1, c2 = (0.01 * L) ** 2, (0.03 * L) ** 2
    ssim_map = ((2 * mu1 * mu2 + c1) * (2 * sigma12 + c2)) / (
        (mu1 * mu1 + mu2 * mu2 + c1) * (sigma1_sq + sigma2_sq + c2)
    )
    return ssim_map.flatten(1).mean(1)


def _to_patches(t: Tensor, patch: int) -> Tensor:
    """(B,C,H,W) -> (B*nh*nw, C, patch, patch), patches in (sample, row, column) order."""
    B, C, H, W = t.shape
    t = t.reshape(B, C, H // patch, patch, W // patch, patch)
    return t.permute(0, 2, 4, 1, 3, 5).reshape(-1, C, patch, patch)


def patch_destroy_loss(
    A: Tensor, N: Tensor, GT: Tensor, G: Tensor, BG: Tensor, patch: int, ld: float
) -> Tensor:
    """Destroyer loss summed over samples and patches (vectorised over patches with unfold).

    Per patch: diff = min(ld * (1 - SSIM(N, GT)), 1);
    loss = diff * mean((BG - G)^2) + (1 - diff) * mean((A - G)^2).
    """
    checks.patch_destroy_loss(A, N, GT, G, BG, patch)
    A, N, GT, G, BG = (_to_patches(t, patch) for t in (A, N, GT, G, BG))
    diff = torch.clamp(ld * (1 - _ssim(N, GT, _ssim_range(N).view(-1, 1, 1, 1))), max=1.0)
    mse_bg = (BG - G).pow(2).flatten(1).mean(1)
    mse_a = (A - G).pow(2).flatten(1).mean(1)
    return (diff * mse_bg + (1 - diff) * mse_a).sum()


def _patch_destroy_loss_backward(
    grad: Tensor, A: Tensor, N: Tensor, GT: Tensor, G: Tensor, BG: Tensor, patch: int, ld: float
) -> Tensor:
    checks.patch_destroy_loss_backward(grad, A, N, GT, G, BG, patch)
    return _vjp(lambda *t: patch_destroy_loss(*t, patch, ld), (A, N, GT, G, BG), (grad,), wrt=(3,))[0]


def patch_destroy_loss_loop(
    A: Tensor, N: Tensor, GT: Tensor, G: Tensor, BG: Tensor, patch: int, ld: float
) -> Tensor:
    """The reference ALGORITHM (benchmark baseline): a Python loop over every sample and patch.

    One small SSIM per patch, each building its window and deciding its dynamic range on the
    host (a device sync per patch), as the paper code does. Same value as patch_destroy_loss.
    """
    checks.patch_destroy_loss(A, N, GT, G, BG, patch)
    B, _, H, W = A.shape
    total = G.new_zeros(())
    for b in range(B):
        for top in range(0, H, patch):
            for left in range(0, W, patch):
                tile = (slice(b, b + 1), slice(None), slice(top, top + patch), slice(left, left + patch))
                n_p, gt_p, g_p = N[tile], GT[tile], G[tile]
                max_val = 255.0 if n_p.max().item() > 128 else 1.0
                min_val = -1.0 if n_p.min().item() < -0.5 else 0.0
                s = _ssim(n_p, gt_p, max_val - min_val)[0]
                diff = torch.clamp(ld * (1 - s), max=1.0)
                total = total + diff * (BG[tile] - g_p).pow(2).mean() + (1 - diff) * (
                    A[tile] - g_p
                ).pow(2).mean()
    return total


# ----------------------------------------------------------------------------------------
# winograd_conv3x3: the plain convolution it computes
# ----------------------------------------------------------------------------------------
# Winograd filter transforms u = G g G^T, by output tile side: F(2x2, 3x3) and F(4x4, 3x3)
# (interpolation points 0, +-1, +-2 and infinity).
WINOGRAD_G = {
    2: ((1.0, 0.0, 0.0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0.0, 0.0, 1.0)),
    4: ((1 / 4, 0.0, 0.0), (-1 / 6, -1 / 6, -1 / 6), (-1 / 6, 1 / 6, -1 / 6), (1 / 24, 1 / 12, 1 / 6),
        (1 / 24, -1 / 12, 1 / 6), (0.0, 0.0, 1.0)),
}
WINOGRAD_TILE_BY_POSITIONS = {16: 2, 36: 4}  # u.shape[0] = (tile + 2) ** 2


def winograd_conv3x3(x: Tensor, u: Tensor, bias: Tensor | None, dilation: int, relu: bool) -> Tensor:
    """What the op computes: the 3x3 convolution (stride 1, zero padding = dilation) with the
    filters g that `u` was made from (recovered exactly: g = G^+ u G^+T), then ReLU if asked."""
    checks.winograd_conv3x3(x, u, bias, dilation)
    g = torch.tensor(WINOGRAD_G[WINOGRAD_TILE_BY_POSITIONS[u.shape[0]]], dtype=torch.float64, device=u.device)
    g_pinv = torch.linalg.pinv(g)  # (3, A); G has full column rank, so G^+ G = I
    a, k = g.shape[0], u.shape[2]
    weight = torch.einsum("ia,abck,jb->kcij", g_pinv, u.double().view(a, a, u.shape[1], k), g_pinv)
    y = F.conv2d(x, weight.to(x.dtype), bias, padding=dilation, dilation=dilation)
    return (torch.relu(y) if relu else y).contiguous(memory_format=torch.channels_last)
