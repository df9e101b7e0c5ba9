"""Tests of mama::warp and mama::warp_residual: C++ CPU kernel, Triton launchers (interpreted on
CPU) and autograd glue, all against the plain-PyTorch reference in mama.reference."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from mama.kernels import warp as triton_warp

import mama.ops as ops
from mama import reference
from tests.support import poisoned_empty
from benchmarks import sizes

SHAPES = [
    (1, 1, 1, 1),  # minimal: one pixel, every sample clamps onto it
    (1, 3, 5, 7),  # batch 1, odd sizes, H != W
    (3, 2, 6, 4),  # batch 3, H > W
    (2, 4, 17, 13),  # odd non-power-of-two sizes, more channels
    sizes.WARP,  # the real size: FlowNet2's warping of RGB frames at 256x256
]
SMALL_SHAPES = SHAPES[:4]

# dtype with the tolerance of its comparisons against the reference.
DTYPES = [
    pytest.param(torch.float32, dict(rtol=1e-5, atol=2e-5), id="float32"),
    pytest.param(torch.float64, dict(rtol=1e-12, atol=1e-12), id="float64"),
]


def make_inputs(shape, dtype, seed):
    """(img0, img1, flow): random images and a flow that moves points up to a few pixels, with
    about a tenth of the pixels sent far outside the image (where the indices clamp)."""
    gen = torch.Generator().manual_seed(seed)
    batch, channels, height, width = shape
    img0 = torch.randn(shape, generator=gen, dtype=dtype)
    img1 = torch.randn(shape, generator=gen, dtype=dtype)
    flow = 3 * torch.randn((batch, 2, height, width), generator=gen, dtype=dtype)
    far = torch.rand((batch, 2, height, width), generator=gen) < 0.1
    far_flow = (torch.rand((batch, 2, height, width), generator=gen, dtype=dtype) - 0.5)
    flow = torch.where(far, far_flow * 8 * (height + width), flow)
    return img0, img1, flow


def grads_of(fn, inputs, upstream):
    """Gradients of fn(*inputs) (tensor or tuple) for every input, under upstream gradients."""
    leaves = [x.detach().clone().requires_grad_() for x in inputs]
    outs = fn(*leaves)
    outs = outs if isinstance(outs, tuple) else (outs,)
    pairs = [(o, g) for o, g in zip(outs, upstream) if g is not None]
    got = torch.autograd.grad(
        [o for o, _ in pairs], leaves, [g for _, g in pairs], allow_unused=True
    )
    return [torch.zeros_like(x) if g is None else g for x, g in zip(leaves, got)]




def test_poisoned_empty_really_poisons():
    with poisoned_empty():
        assert torch.empty(5, dtype=torch.float32).isnan().all()


# ----------------------------------------------------------------- C++ kernel vs reference


@pytest.mark.parametrize("dtype,tol", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_warp_forward_matches_reference(shape, dtype, tol):
    _, img, flow = make_inputs(shape, dtype, seed=1)
    with poisoned_empty():
        out = ops.warp(img, flow)
    assert out.shape == img.shape and out.dtype == dtype
    torch.testing.assert_close(out, reference.warp(img, flow), **tol)


@pytest.mark.parametrize("dtype,tol", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_warp_backward_matches_reference(shape, dtype, tol):
    _, img, flow = make_inputs(shape, dtype, seed=2)
    upstream = (torch.randn(shape, dtype=dtype, generator=torch.Generator().manual_seed(3)),)
    with poisoned_empty():
        got = grads_of(ops.warp, (img, flow), upstream)
    want = grads_of(reference.warp, (img, flow), upstream)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, **tol)


@pytest.mark.parametrize("dtype,tol", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_warp_residual_forward_matches_reference(shape, dtype, tol):
    img0, img1, flow = make_inputs(shape, dtype, seed=4)
    with poisoned_empty():
        warped, norm = ops.warp_residual(img0, img1, flow)
    want_warped, want_norm = reference.warp_residual(img0, img1, flow)
    assert norm.shape == (shape[0], 1, shape[2], shape[3])
    torch.testing.assert_close(warped, want_warped, **tol)
    torch.testing.assert_close(norm, want_norm, **tol)


def _residual_backward_case(shape, dtype, tol, which):
    img0, img1, flow = make_inputs(shape, dtype, seed=5)
    gen = torch.Generator().manual_seed(6)
    batch, _, height, width = shape
    grad_warped = torch.randn(shape, dtype=dtype, generator=gen)
    grad_norm = torch.randn((batch, 1, height, width), dtype=dtype, generator=gen)
    # An output left out of the loss reaches the glue as None; it must act as a zero gradient.
    upstream = {
        "both": (grad_warped, grad_norm),
        "warped_only": (grad_warped, None),
        "norm_only": (None, grad_norm),
    }[which]
    with poisoned_empty():
        got = grads_of(ops.warp_residual, (img0, img1, flow), upstream)
    want = grads_of(reference.warp_residual, (img0, img1, flow), upstream)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, **tol)


@pytest.mark.parametrize("dtype,tol", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_warp_residual_backward_matches_reference(shape, dtype, tol):
    _residual_backward_case(shape, dtype, tol, "both")


@pytest.mark.parametrize("dtype,tol", DTYPES)
@pytest.mark.parametrize("shape", SMALL_SHAPES)
@pytest.mark.parametrize("which", ["warped_only", "norm_only"])
def test_warp_residual_backward_with_one_output_unused(shape, dtype, tol, which):
    _residual_backward_case(shape, dtype, tol, which)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("shape", [(1, 2, 3, 4), (2, 3, 5, 3)])
def test_gradcheck(shape, seed):
    img0, img1, flow = make_inputs(shape, torch.float64, seed)
    inputs = [t.requires_grad_() for t in (img0, img1, flow)]
    assert torch.autograd.gradcheck(ops.warp, (inputs[1], inputs[2]))
    assert torch.autograd.gradcheck(ops.warp_residual, tuple(inputs))


@pytest.mark.parametrize("dtype,tol", DTYPES)
def test_permuted_inputs(dtype, tol):
    # Channels-last images and a flow stored (B, H, W, 2): the kernel must make them contiguous.
    img0, img1, flow = make_inputs((2, 3, 7, 9), dtype, seed=7)
    img0_p, img1_p = (t.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2) for t in (img0, img1))
    flow_p = flow.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
    assert not img1_p.is_contiguous() and not flow_p.is_contiguous()
    torch.testing.assert_close(ops.warp(img1_p, flow_p), reference.warp(img1, flow), **tol)
    for g, w in zip(ops.warp_residual(img0_p, img1_p, flow_p),
                    reference.warp_residual(img0, img1, flow)):
        torch.testing.assert_close(g, w, **tol)
    upstream = (torch.randn_like(img1), torch.randn_like(img1[:, :1]))
    got = grads_of(ops.warp_residual, (img0_p, img1_p, flow_p), upstream)
    want = grads_of(reference.warp_residual, (img0, img1, flow), upstream)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, **tol)


def test_opcheck():
    img0, img1, flow = make_inputs((2, 3, 5, 6), torch.float64, seed=8)
    for t in (img0, img1, flow):
        t.requires_grad_()
    torch.library.opcheck(torch.ops.mama.warp.default, (img1, flow))
    torch.library.opcheck(torch.ops.mama.warp_residual.default, (img0, img1, flow))


# ----------------------------------------------------------------- semantics without the oracle


def test_hand_computed_bilinear_and_border():
    img = torch.arange(12, dtype=torch.float64).reshape(1, 1, 3, 4)  # value = 4 * y + x
    flow = torch.zeros(1, 2, 3, 4, dtype=torch.float64)
    flow[0, :, 1, 1] = torch.tensor([0.25, 0.5])  # interior: (1.25, 1.5) -> 4 * 1.5 + 1.25
    flow[0, :, 0, 0] = torch.tensor([1000.0, 0.0])  # far right: border pixel (0, 3)
    flow[0, :, 2, 3] = torch.tensor([-1000.3, -0.5])  # far left, half a row up: rows 1 and 2 at x 0
    flow[0, :, 0, 2] = torch.tensor([0.5, -7.75])  # far above: row 0, between x 2 and 3
    out = ops.warp(img, flow)[0, 0]
    assert out[1, 1].item() == pytest.approx(7.25, abs=1e-12)
    assert out[0, 0].item() == pytest.approx(3.0, abs=1e-12)
    assert out[2, 3].item() == pytest.approx(6.0, abs=1e-12)
    assert out[0, 2].item() == pytest.approx(2.5, abs=1e-12)
    assert out[2, 1].item() == pytest.approx(9.0, abs=1e-12)  # zero flow: the pixel itself


def test_flow_gradient_uses_unclamped_weights_at_the_border():
    # Beyond the right border both x neighbours clamp to W - 1: out no longer depends on flow_x,
    # but it still moves with flow_y through the unclamped beta.
    img = torch.randn(1, 2, 4, 5, dtype=torch.float64)
    flow = torch.zeros(1, 2, 4, 5, dtype=torch.float64)
    flow[:, 0] = 10.0
    flow[:, 1] = 0.3
    flow.requires_grad_()
    out = ops.warp(img, flow)
    (grad_flow,) = torch.autograd.grad(out.sum(), flow)
    assert torch.all(grad_flow[:, 0] == 0)
    want_y = (img[:, :, 1:, -1] - img[:, :, :-1, -1]).sum(1)  # d/dbeta of the column W - 1
    torch.testing.assert_close(grad_flow[0, 1, :-1, :], want_y[0, :, None].expand(3, 5))


def test_equals_grid_sample_border_not_zeros():
    # Resample2d semantics coincide with grid_sample(padding_mode="border", align_corners=True),
    # values and gradients; grid_sample's default zero padding differs wherever a sample point
    # leaves the image.
    img0, img1, flow = make_inputs((2, 3, 9, 11), torch.float64, seed=9)
    height, width = img1.shape[2:]
    ys, xs = torch.meshgrid(torch.arange(height, dtype=flow.dtype),
                            torch.arange(width, dtype=flow.dtype), indexing="ij")

    def sample(padding_mode):
        def fn(img, flow):
            px, py = xs + flow[:, 0], ys + flow[:, 1]
            grid = torch.stack([2 * px / (width - 1) - 1, 2 * py / (height - 1) - 1], dim=-1)
            return F.grid_sample(img, grid, mode="bilinear", padding_mode=padding_mode,
                                 align_corners=True)
        return fn

    upstream = (torch.randn_like(img1),)
    torch.testing.assert_close(ops.warp(img1, flow), sample("border")(img1, flow))
    for g, w in zip(grads_of(ops.warp, (img1, flow), upstream),
                    grads_of(sample("border"), (img1, flow), upstream)):
        torch.testing.assert_close(g, w)
    px, py = xs + flow[:, 0], ys + flow[:, 1]
    outside = (px < 0) | (px > width - 1) | (py < 0) | (py > height - 1)
    zero_padded = sample("zeros")(img1, flow)
    assert outside.any()
    gap = (ops.warp(img1, flow) - zero_padded).abs().amax(1)
    assert torch.all(gap[~outside] < 1e-12)
    assert gap[outside].max() > 0.1


def test_norm_gradient_is_zero_where_norm_is_zero():
    # Integer flow makes the warp exact, so img0 := warped on some pixels gives norm == 0 there.
    gen = torch.Generator().manual_seed(10)
    img1 = torch.randn(2, 3, 6, 7, dtype=torch.float64, generator=gen)
    flow = torch.randint(-2, 3, (2, 2, 6, 7), generator=gen).to(torch.float64)
    same = torch.rand(2, 1, 6, 7, generator=gen) < 0.5
    img0 = torch.where(same, reference.warp(img1, flow), torch.randn_like(img1))
    grad_norm = torch.randn(2, 1, 6, 7, dtype=torch.float64, generator=gen)
    grad_warped = torch.randn_like(img1)
    warped, norm = ops.warp_residual(img0, img1, flow)
    assert torch.all(norm[same] == 0) and torch.all(norm[~same] > 0)
    got = torch.ops.mama._warp_residual_backward(
        grad_warped, grad_norm, img0, img1, flow, warped, norm)
    assert all(torch.isfinite(g).all() for g in got)
    assert torch.all(got[0].masked_select(same) == 0)  # grad_img0: 0 where the norm is 0
    want = reference._warp_residual_backward(grad_warped, grad_norm, img0, img1, flow, warped, norm)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: ops.warp(torch.zeros(3, 4, 5), torch.zeros(3, 2, 4, 5)), r"warp: img must be a 4-D"),
        (lambda: ops.warp(torch.zeros(1, 3, 4, 5), torch.zeros(1, 3, 4, 5)),
         r"warp: flow must have shape \(B, 2, H, W\) = \(1, 2, 4, 5\)"),
        (lambda: ops.warp(torch.zeros(1, 3, 4, 5), torch.zeros(1, 2, 5, 4)), r"flow must have shape"),
        (lambda: ops.warp(torch.zeros(1, 3, 4, 5), torch.zeros(1, 2, 4, 5, dtype=torch.float64)),
         r"warp: flow dtype Double must match img dtype Float"),
        (lambda: ops.warp(torch.zeros(1, 3, 4, 5, dtype=torch.int32),
                          torch.zeros(1, 2, 4, 5, dtype=torch.int32)),
         r"warp: img must be float32 or float64"),
        (lambda: ops.warp_residual(torch.zeros(1, 2, 4, 5), torch.zeros(1, 3, 4, 5),
                                   torch.zeros(1, 2, 4, 5)),
         r"warp_residual: img0 must have the shape of img1"),
        (lambda: torch.ops.mama._warp_backward(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 5),
                                               torch.zeros(1, 2, 4, 5)),
         r"_warp_backward: grad_out must have the shape of img"),
    ],
    ids=["img_3d", "flow_channels", "flow_hw", "dtype_mismatch", "int_dtype", "img0_shape",
         "grad_shape"],
)
def test_bad_inputs_raise(call, match):
    with pytest.raises(RuntimeError, match=match):
        call()


@pytest.mark.compile
def test_torch_compile_fullgraph_matches_eager():
    def fn(img0, img1, flow):
        warped, norm = ops.warp_residual(img0, img1, flow)
        return ops.warp(warped, -flow) * norm

    # aot_eager traces the forward and backward graphs through the fake impls like inductor
    # does, without inductor's minute of C++ code generation on a shared CPU.
    img0, img1, flow = make_inputs((1, 2, 5, 6), torch.float32, seed=11)
    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(img0, img1, flow), fn(img0, img1, flow))
    upstream = (torch.randn(1, 2, 5, 6),)
    for g, w in zip(grads_of(compiled, (img0, img1, flow), upstream),
                    grads_of(fn, (img0, img1, flow), upstream)):
        torch.testing.assert_close(g, w)


# ----------------------------------------------------------------- Triton launchers (interpreted)

TRITON_SHAPES = [
    (1, 1, 1, 1),  # minimal
    (2, 3, 5, 7),  # odd sizes, H != W, more pixels than nothing but fewer than one block
    (3, 2, 24, 50),  # batch 3, spans two 1024-pixel programs with a partial one
]


@pytest.mark.triton
@pytest.mark.parametrize("dtype,tol", DTYPES)
@pytest.mark.parametrize("shape", TRITON_SHAPES)
def test_triton_warp_matches_reference(shape, dtype, tol):
    _, img, flow = make_inputs(shape, dtype, seed=12)
    grad_out = torch.randn(shape, dtype=dtype, generator=torch.Generator().manual_seed(13))
    with poisoned_empty():
        out = triton_warp.warp_forward(img, flow)
        grad_img, grad_flow = triton_warp.warp_backward(grad_out, img, flow)
    torch.testing.assert_close(out, reference.warp(img, flow), **tol)
    want = reference._warp_backward(grad_out, img, flow)
    torch.testing.assert_close(grad_img, want[0], **tol)
    torch.testing.assert_close(grad_flow, want[1], **tol)


@pytest.mark.triton
@pytest.mark.parametrize("dtype,tol", DTYPES)
@pytest.mark.parametrize("shape", TRITON_SHAPES)
def test_triton_warp_residual_matches_reference(shape, dtype, tol):
    img0, img1, flow = make_inputs(shape, dtype, seed=14)
    gen = torch.Generator().manual_seed(15)
    grad_warped = torch.randn(shape, dtype=dtype, generator=gen)
    grad_norm = torch.randn((shape[0], 1, shape[2], shape[3]), dtype=dtype, generator=gen)
    with poisoned_empty():
        warped, norm = triton_warp.warp_residual_forward(img0, img1, flow)
        got = triton_warp.warp_residual_backward(grad_warped, grad_norm, img0, img1, flow,
                                                 warped, norm)
    want_warped, want_norm = reference.warp_residual(img0, img1, flow)
    torch.testing.assert_close(warped, want_warped, **tol)
    torch.testing.assert_close(norm, want_norm, **tol)
    want = reference._warp_residual_backward(grad_warped, grad_norm, img0, img1, flow,
                                             want_warped, want_norm)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, **tol)


@pytest.mark.triton
def test_triton_permuted_inputs():
    img0, img1, flow = make_inputs((2, 3, 6, 5), torch.float64, seed=16)
    img0_p, img1_p, flow_p = (t.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
                              for t in (img0, img1, flow))
    assert not flow_p.is_contiguous()
    for g, w in zip(triton_warp.warp_residual_forward(img0_p, img1_p, flow_p),
                    reference.warp_residual(img0, img1, flow)):
        torch.testing.assert_close(g, w)


@pytest.mark.triton
def test_triton_norm_gradient_zero_and_bad_inputs():
    img1 = torch.randn(1, 3, 4, 5, dtype=torch.float64)
    flow = torch.zeros(1, 2, 4, 5, dtype=torch.float64)
    img0 = img1.clone()
    img0[:, :, 0] += 1.0  # row 0 differs, the rest has norm exactly 0
    warped, norm = triton_warp.warp_residual_forward(img0, img1, flow)
    assert torch.all(norm[:, :, 1:] == 0) and torch.all(norm[:, :, 0] > 0)
    grad_img0, _, _ = triton_warp.warp_residual_backward(
        torch.zeros_like(img1), torch.ones_like(norm), img0, img1, flow, warped, norm)
    assert torch.all(grad_img0[:, :, 1:] == 0) and torch.isfinite(grad_img0).all()
    with pytest.raises(RuntimeError, match=r"warp: flow must have shape \(B, 2, H, W\)"):
        triton_warp.warp_forward(img1, flow[:, :1])
    with pytest.raises(RuntimeError, match=r"warp: img must be float32 or float64, got Half"):
        triton_warp.warp_forward(img1.half(), flow.half())
