"""One contract for bad op inputs: the C++ kernel (its own checks), the reference and the Triton
launcher (both mama.checks) refuse each bad input below with a RuntimeError of the same text.

The device checks differ by design: the C++ kernel wants CPU tensors (not provokable with CPU
tensors alone), mama.checks wants one device for all (tested below for the reference and the
Triton launchers, with a meta tensor beside CPU ones). Not here: the Triton launchers' own block
limits (mama.kernels.blocks; tested with each kernel). winograd_conv3x3 has no Triton kernel.
"""
from __future__ import annotations

import pytest
import torch

from mama import ops, reference  # noqa: F401  (ops registers the C++ kernels' schemas)
from mama.kernels import bottleneck_sim as triton_bottleneck_sim
from mama.kernels import correlation as triton_correlation
from mama.kernels import patch_destroy_loss as triton_patch_destroy_loss
from mama.kernels import warp as triton_warp

TRITON = {
    "correlation": triton_correlation.correlation_forward,
    "_correlation_backward": triton_correlation.correlation_backward,
    "warp": triton_warp.warp_forward,
    "_warp_backward": triton_warp.warp_backward,
    "warp_residual": triton_warp.warp_residual_forward,
    "_warp_residual_backward": triton_warp.warp_residual_backward,
    "bottleneck_sim": triton_bottleneck_sim.bottleneck_sim_forward,
    "_bottleneck_sim_backward": triton_bottleneck_sim.bottleneck_sim_backward,
    "patch_destroy_loss": triton_patch_destroy_loss.patch_destroy_loss_forward,
    "_patch_destroy_loss_backward": triton_patch_destroy_loss.patch_destroy_loss_backward,
}


def t(*shape, dtype=torch.float32):
    return torch.zeros(shape, dtype=dtype)


D = torch.float64
CORR = (1, 1, 1, 1, 1, 1.0)  # pad, kernel_size, max_disp, stride1, stride2, negative_slope: 9 x 6 x 6


def corr(a, b, *params):
    return (a, b, *(params or CORR))


def warp_residual_bwd(**bad):
    args = dict(grad_warped=t(1, 3, 4, 5), grad_norm=t(1, 1, 4, 5), img0=t(1, 3, 4, 5),
                img1=t(1, 3, 4, 5), flow=t(1, 2, 4, 5), warped=t(1, 3, 4, 5), norm=t(1, 1, 4, 5))
    return tuple({**args, **bad}.values())


def feats(*bad):
    """x4, y4, x_y, z4, x_z of shape (2, 4, 3, 3) with the i-th replaced by bad[i] when given."""
    return tuple(b if b is not None else t(2, 4, 3, 3)
                 for b in (*bad, *[None] * (5 - len(bad))))


def five(*bad):
    """A, N, GT, G, BG of shape (1, 3, 16, 16) with the i-th replaced by bad[i] when given."""
    return tuple(b if b is not None else t(1, 3, 16, 16) for b in (*bad, *[None] * (5 - len(bad))))


CASES = [  # (id, op, arguments the kernels must refuse)
    ("corr_rank", "correlation", corr(t(2, 6, 6), t(2, 6, 6))),
    ("corr_shapes", "correlation", corr(t(1, 2, 6, 6), t(1, 2, 6, 7))),
    ("corr_dtypes", "correlation", corr(t(1, 2, 6, 6), t(1, 2, 6, 6, dtype=D))),
    ("corr_int", "correlation", corr(t(1, 2, 6, 6, dtype=torch.int32), t(1, 2, 6, 6, dtype=torch.int32))),
    ("corr_half", "correlation", corr(t(1, 2, 6, 6, dtype=torch.float16), t(1, 2, 6, 6, dtype=torch.float16))),
    ("corr_kernel_size", "correlation", corr(t(1, 2, 6, 6), t(1, 2, 6, 6), 1, 2, 1, 1, 1, 1.0)),
    ("corr_pad", "correlation", corr(t(1, 2, 6, 6), t(1, 2, 6, 6), -1, 1, 1, 1, 1, 1.0)),
    ("corr_stride", "correlation", corr(t(1, 2, 6, 6), t(1, 2, 6, 6), 1, 1, 1, 1, 0, 1.0)),
    ("corr_slope", "correlation", corr(t(1, 2, 6, 6), t(1, 2, 6, 6), 1, 1, 1, 1, 1, -0.1)),
    ("corr_slope_whole", "correlation", corr(t(1, 2, 6, 6), t(1, 2, 6, 6), 1, 1, 1, 1, 1, -2.0)),
    ("corr_too_small", "correlation", corr(t(1, 2, 3, 3), t(1, 2, 3, 3), 0, 1, 2, 1, 1, 1.0)),
    ("corr_no_channel", "correlation", corr(t(1, 0, 6, 6), t(1, 0, 6, 6))),
    ("corr_bwd_grad_shape", "_correlation_backward",
     (t(1, 4, 6, 6), t(1, 2, 6, 6), t(1, 2, 6, 6), t(1, 9, 6, 6), *CORR)),
    ("corr_bwd_grad_dtype", "_correlation_backward",
     (t(1, 9, 6, 6, dtype=D), t(1, 2, 6, 6), t(1, 2, 6, 6), t(1, 9, 6, 6), *CORR)),
    ("corr_bwd_checks_forward_args", "_correlation_backward",
     (t(1, 9, 6, 6), t(1, 2, 6, 6), t(1, 3, 6, 6), t(1, 9, 6, 6), *CORR)),
    ("warp_rank", "warp", (t(3, 4, 5), t(1, 2, 4, 5))),
    ("warp_flow_channels", "warp", (t(1, 3, 4, 5), t(1, 3, 4, 5))),
    ("warp_flow_hw", "warp", (t(1, 3, 4, 5), t(1, 2, 5, 4))),
    ("warp_int", "warp", (t(1, 3, 4, 5, dtype=torch.int32), t(1, 2, 4, 5, dtype=torch.int32))),
    ("warp_half", "warp", (t(1, 3, 4, 5, dtype=torch.float16), t(1, 2, 4, 5, dtype=torch.float16))),
    ("warp_flow_dtype", "warp", (t(1, 3, 4, 5), t(1, 2, 4, 5, dtype=D))),
    ("warp_bwd_grad_shape", "_warp_backward", (t(1, 3, 4, 4), t(1, 3, 4, 5), t(1, 2, 4, 5))),
    ("warp_bwd_grad_dtype", "_warp_backward", (t(1, 3, 4, 5, dtype=D), t(1, 3, 4, 5), t(1, 2, 4, 5))),
    ("residual_img0_shape", "warp_residual", (t(1, 2, 4, 5), t(1, 3, 4, 5), t(1, 2, 4, 5))),
    ("residual_img0_dtype", "warp_residual", (t(1, 3, 4, 5, dtype=D), t(1, 3, 4, 5), t(1, 2, 4, 5))),
    ("residual_rank", "warp_residual", (t(1, 3, 4, 5), t(3, 4, 5), t(1, 2, 4, 5))),
    ("residual_bwd_warped", "_warp_residual_backward", warp_residual_bwd(warped=t(1, 3, 4, 4))),
    ("residual_bwd_grad_warped", "_warp_residual_backward",
     warp_residual_bwd(grad_warped=t(1, 3, 4, 5, dtype=D))),
    ("residual_bwd_grad_norm", "_warp_residual_backward", warp_residual_bwd(grad_norm=t(1, 1, 4, 4))),
    ("residual_bwd_norm", "_warp_residual_backward",
     warp_residual_bwd(grad_norm=t(1, 2, 4, 5), norm=t(1, 2, 4, 5))),
    ("sim_rank", "bottleneck_sim", (*feats(t(2, 4, 3)), 0.2)),
    ("sim_shape", "bottleneck_sim", (*feats(None, None, None, None, t(2, 4, 3, 2)), 0.2)),
    ("sim_dtype", "bottleneck_sim", (*feats(None, t(2, 4, 3, 3, dtype=D)), 0.2)),
    ("sim_empty", "bottleneck_sim", (*[t(0, 4, 3, 3)] * 5, 0.2)),
    ("sim_bwd_grads", "_bottleneck_sim_backward", (t(3), t(2), *feats(), 0.2)),
    ("sim_bwd_features", "_bottleneck_sim_backward", (t(2), t(2), *feats(None, t(2, 4, 3, 2)), 0.2)),
    ("patch_rank", "patch_destroy_loss", (*five(t(3, 16, 16)), 8, 4.0)),
    ("patch_shape", "patch_destroy_loss", (*five(None, None, None, None, t(1, 3, 16, 8)), 8, 4.0)),
    ("patch_dtype", "patch_destroy_loss", (*five(None, None, t(1, 3, 16, 16, dtype=D)), 8, 4.0)),
    ("patch_multiple", "patch_destroy_loss", (*five(), 5, 4.0)),
    ("patch_zero", "patch_destroy_loss", (*five(), 0, 4.0)),
    ("patch_empty", "patch_destroy_loss", (*[t(0, 3, 16, 16)] * 5, 8, 4.0)),
    ("patch_bwd_grad", "_patch_destroy_loss_backward", (t(2), *five(), 8, 4.0)),
    ("patch_bwd_inputs", "_patch_destroy_loss_backward", (t(), *five(t(1, 3, 8, 16)), 8, 4.0)),
]

WINOGRAD_CASES = [  # no Triton kernel: the C++ kernel and the reference
    ("wino_rank", (t(4, 6, 6), t(36, 4, 5), None, 1, False)),
    ("wino_u_positions", (t(1, 4, 6, 6), t(25, 4, 5), None, 1, False)),
    ("wino_u_rank", (t(1, 4, 6, 6), t(36, 4), None, 1, False)),
    ("wino_channels", (t(1, 4, 6, 6), t(36, 3, 5), None, 1, False)),
    ("wino_double", (t(1, 4, 6, 6, dtype=D), t(36, 4, 5, dtype=D), None, 1, False)),
    ("wino_u_double", (t(1, 4, 6, 6), t(36, 4, 5, dtype=D), None, 1, False)),
    ("wino_dilation", (t(1, 4, 6, 6), t(36, 4, 5), None, 0, False)),
    ("wino_bias_shape", (t(1, 4, 6, 6), t(36, 4, 5), t(3), 1, False)),
    ("wino_bias_dtype", (t(1, 4, 6, 6), t(36, 4, 5), t(5, dtype=D), 1, False)),
]


def refusal(fn, args) -> tuple[type, str]:
    with pytest.raises(Exception) as info:
        fn(*args)
    return info.type, str(info.value)


@pytest.mark.triton
@pytest.mark.parametrize("op,args", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_the_three_backends_refuse_alike(op, args):
    cpp = refusal(getattr(torch.ops.mama, op), args)
    assert cpp[0] is RuntimeError and op.lstrip("_").removesuffix("_backward") in cpp[1]
    assert refusal(getattr(reference, op), args) == cpp
    assert refusal(TRITON[op], args) == cpp


@pytest.mark.parametrize("args", [c[1] for c in WINOGRAD_CASES], ids=[c[0] for c in WINOGRAD_CASES])
def test_winograd_cpu_kernel_and_reference_refuse_alike(args):
    cpp = refusal(torch.ops.mama.winograd_conv3x3, args)
    assert cpp[0] is RuntimeError and cpp[1].startswith("winograd_conv3x3: ")
    assert refusal(reference.winograd_conv3x3, args) == cpp


def meta(*shape):
    return torch.zeros(shape, device="meta")


DEVICE_CASES = [  # one tensor on another device: the reference and the Triton launcher alike
    ("correlation", corr(t(1, 2, 6, 6), meta(1, 2, 6, 6)), "correlation: tensors on different devices: "
     "a on cpu, b on meta"),
    ("warp", (t(1, 3, 4, 5), meta(1, 2, 4, 5)), "warp: tensors on different devices: img on cpu, flow on meta"),
    ("warp_residual", (meta(1, 3, 4, 5), t(1, 3, 4, 5), t(1, 2, 4, 5)),
     "warp_residual: tensors on different devices: img0 on meta, img1 on cpu"),
    ("bottleneck_sim", (*feats(None, meta(2, 4, 3, 3)), 0.2),
     "bottleneck_sim: tensors on different devices: y4 on meta, x4 on cpu"),
    ("patch_destroy_loss", (*five(None, None, None, meta(1, 3, 16, 16)), 8, 4.0),
     "patch_destroy_loss: tensors on different devices: G on meta, A on cpu"),
]


@pytest.mark.triton
@pytest.mark.parametrize("op,args,message", DEVICE_CASES, ids=[c[0] for c in DEVICE_CASES])
def test_reference_and_triton_refuse_mixed_devices_alike(op, args, message):
    assert refusal(getattr(reference, op), args) == (RuntimeError, message)
    assert refusal(TRITON[op], args) == (RuntimeError, message)
