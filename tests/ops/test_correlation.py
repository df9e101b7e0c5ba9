"""mama::correlation (FlowNetC cost volume): C++ CPU kernel and Triton launchers against the
plain-PyTorch reference, forward and both input gradients, plus gradcheck, opcheck,
non-contiguous inputs, bad arguments and torch.compile."""
from __future__ import annotations

import pytest
import torch

import mama.ops as ops
from mama import reference
from benchmarks import sizes

# (B, C, H, W, pad, kernel_size, max_disp, stride1, stride2)
SHAPES = [
    (1, 1, 4, 4, 1, 1, 1, 1, 1),  # minimal: 3x3 displacements, one channel
    (1, 3, 7, 9, 2, 1, 2, 1, 1),  # odd sizes, H != W, every displacement
    (3, 5, 11, 8, 3, 3, 2, 2, 1),  # batch 3, kernel 3, stride1 2 (ceil output size)
    (2, 4, 9, 10, 0, 3, 3, 1, 2),  # no padding, max_disp not a multiple of stride2
    (1, 2, 12, 13, 4, 1, 4, 3, 2),  # stride1 3
    (1, 32, *sizes.CORRELATION[2:], *sizes.CORRELATION_ARGS.values()),  # FlowNetC geometry (441 channels), real map
]
SHAPE_IDS = ["minimal", "odd", "batch3-k3-s1x2", "nopad-s2x2", "s1x3", "flownetc"]
# dtype with its tolerance against the reference
DTYPES = [(torch.float32, dict(rtol=1e-4, atol=1e-5)), (torch.float64, dict(rtol=1e-10, atol=1e-12))]
DTYPE_IDS = ["float32", "float64"]
SLOPES = [1.0, 0.1]  # no activation; FlowNetC's fused LeakyReLU


def make_inputs(shape, dtype, seed=0):
    batch, channels, height, width = shape[:4]
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(batch, channels, height, width, generator=gen, dtype=dtype)
    b = torch.randn(batch, channels, height, width, generator=gen, dtype=dtype)
    return a, b, gen


def params(shape, slope):
    return (*shape[4:], slope)  # pad, kernel_size, max_disp, stride1, stride2, negative_slope


def check_finite(*tensors):
    # Outputs are freshly allocated with empty: a skipped element would show up as garbage,
    # which assert_close catches; NaN/inf also means an element was never written.
    for t in tensors:
        assert torch.isfinite(t).all()


@pytest.mark.parametrize("slope", SLOPES)
@pytest.mark.parametrize("dtype,tol", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_forward_matches_reference(shape, dtype, tol, slope):
    a, b, _ = make_inputs(shape, dtype)
    out = ops.correlation(a, b, *params(shape, slope))
    expected = reference.correlation(a, b, *params(shape, slope))
    check_finite(out)
    assert out.shape == expected.shape
    torch.testing.assert_close(out, expected, **tol)


def test_flownetc_output_shape():
    a, b, _ = make_inputs((1, 8, 32, 32), torch.float32)
    assert ops.correlation(a, b).shape == (1, 441, 32, 32)  # defaults are FlowNetC's


def test_known_value():
    # With C=1, k=1: channel (dy, dx) at pixel p is a(p) * b(p + d), zero outside the image.
    a = torch.zeros(1, 1, 5, 5, dtype=torch.float64)
    b = torch.zeros_like(a)
    a[0, 0, 2, 2] = 3.0
    b[0, 0, 3, 1] = -2.0  # displacement (dy, dx) = (1, -1) from a's pixel
    out = ops.correlation(a, b, pad=1, kernel_size=1, max_disp=1, stride1=1, stride2=1,
                          negative_slope=0.5)
    expected = torch.zeros(1, 9, 5, 5, dtype=torch.float64)
    expected[0, 2 * 3 + 0, 2, 2] = -6.0 * 0.5  # dyi = 2, dxi = 0; LeakyReLU(0.5)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


@pytest.mark.parametrize("slope", SLOPES)
@pytest.mark.parametrize("dtype,tol", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_backward_matches_reference(shape, dtype, tol, slope):
    a, b, gen = make_inputs(shape, dtype)
    grads = []
    for fn in (ops.correlation, reference.correlation):
        a_leaf, b_leaf = a.clone().requires_grad_(), b.clone().requires_grad_()
        out = fn(a_leaf, b_leaf, *params(shape, slope))
        upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=dtype)
        grads.append(torch.autograd.grad(out, (a_leaf, b_leaf), upstream))
    check_finite(*grads[0])
    torch.testing.assert_close(grads[0][0], grads[1][0], **tol)
    torch.testing.assert_close(grads[0][1], grads[1][1], **tol)


GRADCHECK_SHAPES = [
    (1, 2, 5, 4, 1, 1, 1, 1, 1),  # dense 3x3 displacements, H != W
    (2, 2, 6, 5, 1, 3, 2, 2, 2),  # batch 2, kernel 3, both strides 2
]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("shape", GRADCHECK_SHAPES, ids=["dense", "k3-strided"])
def test_gradcheck(shape, seed):
    a, b, _ = make_inputs(shape, torch.float64, seed)
    a.requires_grad_()
    b.requires_grad_()
    assert torch.autograd.gradcheck(
        lambda x, y: ops.correlation(x, y, *params(shape, 0.1)), (a, b)
    )


@pytest.mark.parametrize("shape", [SHAPES[2], SHAPES[4]], ids=[SHAPE_IDS[2], SHAPE_IDS[4]])
def test_permuted_inputs(shape):
    a, b, _ = make_inputs(shape, torch.float64)
    # Same values, non-contiguous strides: H and W swapped in memory, and a channels-last b.
    a_nc = a.transpose(2, 3).contiguous().transpose(2, 3).requires_grad_()
    b_nc = b.contiguous(memory_format=torch.channels_last).requires_grad_()
    assert not a_nc.is_contiguous() and not b_nc.is_contiguous()
    a_c, b_c = a.clone().requires_grad_(), b.clone().requires_grad_()
    out_nc = ops.correlation(a_nc, b_nc, *params(shape, 0.1))
    out_c = ops.correlation(a_c, b_c, *params(shape, 0.1))
    torch.testing.assert_close(out_nc, out_c, rtol=1e-12, atol=1e-13)
    upstream = torch.randn_like(out_c)
    got = torch.autograd.grad(out_nc, (a_nc, b_nc), upstream)
    want = torch.autograd.grad(out_c, (a_c, b_c), upstream)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("shape", [SHAPES[1], SHAPES[2]], ids=[SHAPE_IDS[1], SHAPE_IDS[2]])
def test_opcheck(shape):
    a, b, _ = make_inputs(shape, torch.float32)
    torch.library.opcheck(torch.ops.mama.correlation, (a, b, *params(shape, 0.1)))
    a.requires_grad_()
    b.requires_grad_()
    torch.library.opcheck(torch.ops.mama.correlation, (a, b, *params(shape, 0.1)))
    out = torch.ops.mama.correlation(a.detach(), b.detach(), *params(shape, 0.1))
    torch.library.opcheck(
        torch.ops.mama._correlation_backward,
        (torch.randn_like(out), a.detach(), b.detach(), out, *params(shape, 0.1)),
    )


BAD = [
    # (a shape, b shape, dtype, params, message)
    ((1, 2, 8, 8), (1, 2, 8, 9), torch.float32, (2, 1, 2, 1, 1, 1.0), "same shape"),
    ((2, 8, 8), (2, 8, 8), torch.float32, (2, 1, 2, 1, 1, 1.0), r"\(B,C,H,W\)"),
    ((1, 2, 8, 8), (1, 2, 8, 8), torch.int32, (2, 1, 2, 1, 1, 1.0), "float32 or float64"),
    ((1, 2, 8, 8), (1, 2, 8, 8), torch.float32, (2, 2, 2, 1, 1, 1.0), "kernel_size must be odd"),
    ((1, 2, 8, 8), (1, 2, 8, 8), torch.float32, (2, 1, 2, 0, 1, 1.0), "stride1 and stride2"),
    ((1, 2, 8, 8), (1, 2, 8, 8), torch.float32, (2, 1, 2, 1, 1, -0.1), "negative_slope"),
    ((1, 2, 3, 3), (1, 2, 3, 3), torch.float32, (0, 1, 2, 1, 1, 1.0), "too small"),
]


@pytest.mark.parametrize("a_shape,b_shape,dtype,args,message", BAD)
def test_bad_inputs_raise(a_shape, b_shape, dtype, args, message):
    a = torch.ones(a_shape, dtype=dtype)
    b = torch.ones(b_shape, dtype=dtype)
    with pytest.raises(RuntimeError, match=message):
        ops.correlation(a, b, *args)


def test_backward_rejects_wrong_grad_shape():
    a, b, _ = make_inputs((1, 2, 6, 6, 1, 1, 1, 1, 1), torch.float32)
    out = torch.ops.mama.correlation(a, b, 1, 1, 1, 1, 1, 1.0)
    with pytest.raises(RuntimeError, match="grad_out and out must have shape"):
        torch.ops.mama._correlation_backward(out[:, :4], a, b, out, 1, 1, 1, 1, 1, 1.0)


# Small shapes only: the Triton interpreter runs every program in Python.
TRITON_SHAPES = [
    (1, 3, 6, 5, 2, 1, 2, 1, 2),  # stride2 2: 3x3 displacements
    (2, 3, 5, 7, 2, 1, 2, 1, 1),  # batch 2, H != W, 5x5 displacements
    (1, 2, 6, 7, 1, 3, 1, 2, 1),  # kernel 3, stride1 2
]
TRITON_IDS = ["s2x2", "batch2", "k3-s1x2"]


@pytest.mark.triton
@pytest.mark.parametrize("dtype,tol", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("shape", TRITON_SHAPES, ids=TRITON_IDS)
def test_triton_matches_reference(shape, dtype, tol):
    from mama.kernels.correlation import correlation_backward, correlation_forward

    a, b, gen = make_inputs(shape, dtype)
    a = a.transpose(2, 3).contiguous().transpose(2, 3)  # strided a: the launchers take strides
    args = params(shape, 0.1)
    out = correlation_forward(a, b, *args)
    expected = reference.correlation(a, b, *args)
    check_finite(out)
    torch.testing.assert_close(out, expected, **tol)
    upstream = torch.randn(out.shape, generator=gen, dtype=dtype)
    grad_a, grad_b = correlation_backward(upstream, a, b, out, *args)
    want_a, want_b = reference._correlation_backward(upstream, a, b, expected, *args)
    check_finite(grad_a, grad_b)
    torch.testing.assert_close(grad_a, want_a, **tol)
    torch.testing.assert_close(grad_b, want_b, **tol)


@pytest.mark.triton
def test_triton_rejects_bad_kernel_size():
    from mama.kernels.correlation import correlation_forward

    a = torch.ones(1, 2, 8, 8)
    with pytest.raises(RuntimeError, match="kernel_size must be odd"):
        correlation_forward(a, a, 2, 2, 2, 1, 1, 1.0)


@pytest.mark.compile
def test_compile_matches_eager():
    a, b, _ = make_inputs((1, 3, 6, 7), torch.float32)

    def fn(x, y):
        return (ops.correlation(x, y, 2, 1, 2, 1, 2, 0.1) * 2.0).sum()

    a_e, b_e = a.clone().requires_grad_(), b.clone().requires_grad_()
    eager = fn(a_e, b_e)
    eager_grads = torch.autograd.grad(eager, (a_e, b_e))
    torch._dynamo.reset()
    compiled = torch.compile(fn, fullgraph=True)
    a_c, b_c = a.clone().requires_grad_(), b.clone().requires_grad_()
    out = compiled(a_c, b_c)
    grads = torch.autograd.grad(out, (a_c, b_c))
    torch.testing.assert_close(out, eager, rtol=1e-5, atol=1e-5)
    for g, w in zip(grads, eager_grads):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)
