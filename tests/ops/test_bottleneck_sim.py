"""mama::bottleneck_sim: C++ CPU kernel and Triton launchers against the plain-PyTorch reference."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mama import ops, reference
from tests.support import TRITON_DEVICE, assert_close, poisoned_empty
from benchmarks import sizes

SHAPES = [
    (1, 1, 1, 1),  # minimal: one channel (normalised to +-1), one pixel
    (2, 7, 3, 5),  # odd, non-power-of-two everywhere, h != w
    (3, 16, 4, 9),  # batch 3, width not a power of two
    (2, 512, 4, 8),  # the real channel count on a smaller map
]
# The real F2LM bottleneck (256 x 256 input, batch 4): forward only, the backward is benchmarked.
FORWARD_SHAPES = SHAPES + [sizes.BOTTLENECK]
# dtype with its tolerance against the reference
DTYPES = [(torch.float32, dict(rtol=1e-4, atol=1e-5)), (torch.float64, dict(rtol=1e-9, atol=1e-11))]
MARGIN = 0.2


def make_features(shape, dtype, seed, layout="contiguous"):
    """Five fresh seeded features; `permuted` gives non-contiguous (B,C,h,w) views."""
    gen = torch.Generator().manual_seed(seed)
    B, C, h, w = shape
    if layout == "permuted":
        return [torch.randn(B, h, w, C, generator=gen, dtype=dtype).permute(0, 3, 1, 2) for _ in range(5)]
    return [torch.randn(shape, generator=gen, dtype=dtype) for _ in range(5)]


@pytest.mark.parametrize("dtype,tol", DTYPES)
@pytest.mark.parametrize("shape", FORWARD_SHAPES)
def test_forward_matches_reference(shape, dtype, tol):
    feats = make_features(shape, dtype, seed=1)
    with poisoned_empty():
        got = torch.ops.mama.bottleneck_sim(*feats, MARGIN)
    want = reference.bottleneck_sim(*feats, MARGIN)
    for g, w in zip(got, want):
        assert g.shape == (shape[0],) and g.dtype == dtype
        assert_close(g, w, tol)


@pytest.mark.parametrize("dtype,tol", DTYPES)
@pytest.mark.parametrize("layout", ["contiguous", "permuted"])
@pytest.mark.parametrize("shape", SHAPES)
def test_gradients_match_reference(shape, layout, dtype, tol):
    feats = make_features(shape, dtype, seed=2, layout=layout)
    gen = torch.Generator().manual_seed(3)
    grad_motion, grad_label = (torch.randn(shape[0], generator=gen, dtype=dtype) for _ in range(2))

    leaves = [t.detach().requires_grad_() for t in feats]
    with poisoned_empty():
        sim_motion, sim_label = ops.bottleneck_sim(*leaves, margin=MARGIN)
        torch.autograd.backward([sim_motion, sim_label], [grad_motion, grad_label])
    want_fwd = reference.bottleneck_sim(*feats, MARGIN)
    want = reference._bottleneck_sim_backward(grad_motion, grad_label, *feats, MARGIN)
    assert_close(sim_motion.detach(), want_fwd[0], tol)
    assert_close(sim_label.detach(), want_fwd[1], tol)
    for leaf, w in zip(leaves, want):
        assert_close(leaf.grad, w, tol)


def test_batch_mean_is_torch_triplet_margin_loss():
    """The per-sample sims average to nn.TripletMarginLoss on the normalised 4-D features."""
    x4, y4, x_y, z4, x_z = make_features((3, 8, 4, 6), torch.float64, seed=4)
    sim_motion, sim_label = ops.bottleneck_sim(x4, y4, x_y, z4, x_z, margin=MARGIN)
    n = lambda t: F.normalize(t, dim=1)  # noqa: E731
    triplet = torch.nn.TripletMarginLoss(margin=MARGIN)
    torch.testing.assert_close(sim_motion.mean(), triplet(n(x_y), n(y4), n(x4)))
    torch.testing.assert_close(sim_label.mean(), triplet(n(x_z), n(z4), n(x4)))


def test_zero_when_anchor_is_positive_and_margin_is_met():
    """anchor == positive and margin 0: d(a, p) = ||eps|| <= d(a, n), so every hinge is 0."""
    x4, y4, _, z4, _ = make_features((2, 5, 3, 4), torch.float64, seed=5)
    sim_motion, sim_label = ops.bottleneck_sim(x4, y4, y4, z4, z4, margin=0.0)
    assert torch.equal(sim_motion, torch.zeros(2, dtype=torch.float64))
    assert torch.equal(sim_label, torch.zeros(2, dtype=torch.float64))


def test_only_active_hinges_pass_gradient():
    """A margin too small for any hinge to be positive gives exactly zero gradients."""
    feats = [t.requires_grad_() for t in make_features((2, 4, 3, 5), torch.float64, seed=6)]
    sims = ops.bottleneck_sim(*feats, margin=-100.0)
    (sims[0].sum() + sims[1].sum()).backward()
    assert all(torch.equal(t.grad, torch.zeros_like(t)) for t in feats)
    assert torch.equal(sims[0], torch.zeros(2, dtype=torch.float64))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gradcheck(seed):
    feats = [t.requires_grad_() for t in make_features((2, 2, 2, 3), torch.float64, seed=seed)]
    assert torch.autograd.gradcheck(lambda *t: ops.bottleneck_sim(*t, margin=MARGIN), feats)


def test_unused_output_gets_zero_gradient():
    feats = [t.requires_grad_() for t in make_features((2, 3, 2, 4), torch.float64, seed=7)]
    ops.bottleneck_sim(*feats, margin=MARGIN)[0].sum().backward()
    want = reference._bottleneck_sim_backward(
        torch.ones(2, dtype=torch.float64), torch.zeros(2, dtype=torch.float64),
        *[t.detach() for t in feats], MARGIN,
    )
    for t, w in zip(feats, want):
        torch.testing.assert_close(t.grad, w)
    assert torch.equal(feats[3].grad, torch.zeros_like(feats[3]))  # z4 is only in the label term


def test_opcheck():
    feats = [t.requires_grad_() for t in make_features((1, 2, 2, 3), torch.float64, seed=8)]
    torch.library.opcheck(torch.ops.mama.bottleneck_sim.default, (*feats, MARGIN))


def test_bad_inputs_raise():
    x4, y4, x_y, z4, x_z = make_features((2, 3, 2, 4), torch.float32, seed=9)
    with pytest.raises(RuntimeError, match=r"y4 has shape .* expected .* like x4"):
        torch.ops.mama.bottleneck_sim(x4, y4[:, :2], x_y, z4, x_z, MARGIN)
    with pytest.raises(RuntimeError, match=r"x_z has dtype Double, expected Float like x4"):
        torch.ops.mama.bottleneck_sim(x4, y4, x_y, z4, x_z.double(), MARGIN)
    with pytest.raises(RuntimeError, match=r"x4 must be \(B,C,h,w\)"):
        torch.ops.mama.bottleneck_sim(x4[0], y4[0], x_y[0], z4[0], x_z[0], MARGIN)
    with pytest.raises(RuntimeError, match=r"grads must be \(2,\)"):
        torch.ops.mama._bottleneck_sim_backward(torch.ones(3), torch.ones(2), x4, y4, x_y, z4, x_z, MARGIN)


TRITON_SHAPES = [
    (2, 7, 3, 5),  # odd sizes, channels in one block
    (1, 33, 2, 40),  # width 40 -> 64 lanes: channels go through several blocks
]


@pytest.mark.triton
@pytest.mark.parametrize("dtype,tol", DTYPES)
@pytest.mark.parametrize("shape", TRITON_SHAPES)
def test_triton_matches_reference(shape, dtype, tol):
    from mama.kernels.bottleneck_sim import (
        bottleneck_sim_backward,
        bottleneck_sim_forward,
    )

    feats = make_features(shape, dtype, seed=10, layout="permuted")
    gen = torch.Generator().manual_seed(11)
    grad_motion, grad_label = (torch.randn(shape[0], generator=gen, dtype=dtype) for _ in range(2))
    on = lambda *ts: [t.to(TRITON_DEVICE) for t in ts]  # noqa: E731
    with poisoned_empty():
        got = bottleneck_sim_forward(*on(*feats), MARGIN)
        got_grads = bottleneck_sim_backward(*on(grad_motion, grad_label, *feats), MARGIN)
    for g, w in zip(got, reference.bottleneck_sim(*feats, MARGIN)):
        assert_close(g.cpu(), w, tol)
    want = reference._bottleneck_sim_backward(grad_motion, grad_label, *feats, MARGIN)
    for g, w in zip(got_grads, want):
        assert_close(g.cpu(), w, tol)


@pytest.mark.triton
def test_triton_rejects_too_wide_rows():
    from mama.kernels.bottleneck_sim import bottleneck_sim_forward

    feats = [t.to(TRITON_DEVICE) for t in make_features((1, 1, 1, 1025), torch.float32, seed=12)]
    with pytest.raises(RuntimeError, match="width 1025 > 1024 is unsupported"):
        bottleneck_sim_forward(*feats, MARGIN)


@pytest.mark.compile
def test_torch_compile_fullgraph_matches_eager():
    def loss(x4, y4, x_y, z4, x_z):
        sim_motion, sim_label = ops.bottleneck_sim(x4 * 2, y4, x_y, z4, x_z)
        return (sim_motion + sim_label).mean()

    feats = make_features((2, 3, 2, 4), torch.float32, seed=13)
    eager_in = [t.clone().requires_grad_() for t in feats]
    compiled_in = [t.clone().requires_grad_() for t in feats]
    want = loss(*eager_in)
    got = torch.compile(loss, fullgraph=True, backend="aot_eager")(*compiled_in)
    torch.testing.assert_close(got, want)
    want.backward()
    got.backward()
    for c, e in zip(compiled_in, eager_in):
        torch.testing.assert_close(c.grad, e.grad)
