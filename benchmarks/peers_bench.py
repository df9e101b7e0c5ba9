"""mama's CPU ops against peer libraries, at the paper's real sizes (benchmarks/sizes.py).

Not part of `make bench`: the file name does not match `python_files` (test_*.py,
bench_*.py), and the peers are not dependencies of mama. `bash benchmarks/peers.sh` installs
them (versions in benchmarks/requirements-peers.txt) and runs this file explicitly:

    pytest benchmarks/peers_bench.py --benchmark-only --benchmark-json benchmarks/results/cpu_peers.json

Cases (each group: the providers side by side in one run; quote peer/mama ratios of medians):
  correlation-forward / correlation-full  (4, 256, 32, 32) features, FlowNetC's settings
      (pad 20, kernel 1, max_disp 20, stride1 1, stride2 2 -> 441 channels).
      mama: `mama.ops.correlation(a, b, 20, 1, 20, 1, 2, 0.1)` (divides by C and fuses
      LeakyReLU(0.1)); peer: `spatial_correlation_sample(a, b, kernel_size=1, patch_size=21,
      stride=1, padding=0, dilation_patch=2)`, its raw call alone (no /C, no LeakyReLU: its
      best case). The peer zero-pads implicitly and writes displacement (dy, dx) =
      ((ph - 10) * 2, (pw - 10) * 2) to out[:, ph, pw], mama to channel dyi * 21 + dxi with the
      same (dy, dx): so leaky_relu(peer.reshape(B, 441, H, W) / C, 0.1) == mama, checked once
      per case outside the timing (forward values, and in `full` the input gradients with the
      upstream gradient pulled back through /C and the LeakyReLU for the peer).
      `full` = forward + gradients to both inputs, the same upstream gradient for both
      (reshaped to the peer's (B, 21, 21, H, W)).
  ssim-forward  a destroyer step: (4, 3, 256, 256) frames in [-1, 1], 32 x 32 patches (256).
      mama: `mama.ops.patch_destroy_loss(A, N, GT, G, BG, patch=32, ld=4.0)`, the WHOLE fused
      loss (per-patch dynamic range, SSIM, two MSEs, the sum), so the comparison is
      conservative for mama. Peers, on the pre-unfolded (256, 3, 32, 32) patches of N and GT
      (the unfold is not timed: their best case): `pytorch_msssim.ssim(..., data_range=2.0,
      size_average=False, win_size=11, win_sigma=1.5)` (separable valid Gaussian conv, mean
      over channels -> one value per patch) and `kornia.metrics.ssim(..., 11, max_val=2.0,
      padding='valid').mean((1, 2, 3))` (kornia returns the map). 2.0 is the range mama picks
      for these [-1, 1] patches (checked: every patch), so all three compute the same SSIM;
      each peer's per-patch values are checked once against `mama.reference._ssim`.
Threads: 2 intra-op threads for every provider (`MAMA_PEERS_THREADS`); the peer's OpenMP loops
run on torch's own libgomp (one runtime in the process), so torch.set_num_threads covers them.
"""
from __future__ import annotations

import os
from typing import Callable

import pytest
import torch
import torch.nn.functional as F

import mama.ops as ops
from mama import reference
from benchmarks import sizes
from benchmarks.bench_patch_destroy_loss import destroy_inputs

_HINT = "run `bash benchmarks/peers.sh` (installs the peers of benchmarks/requirements-peers.txt, then runs this file)"
try:
    import kornia
    import pytorch_msssim
    from spatial_correlation_sampler import spatial_correlation_sample
except ImportError as exc:  # a clear stop, not a silent skip: these figures need the peers
    raise ImportError(f"benchmarks/peers_bench.py needs the peer libraries ({exc}); {_HINT}") from exc

THREADS = int(os.environ.get("MAMA_PEERS_THREADS", "2"))
ROUNDS = int(os.environ.get("MAMA_PEERS_ROUNDS", "5"))

# ----------------------------------------------------------------------------- correlation
CORR_SIZE = sizes.CORRELATION  # (4, 256, 32, 32)
CORR = sizes.CORRELATION_ARGS
SLOPE = 0.1
FLOWNETC = (CORR["pad"], CORR["kernel_size"], CORR["max_disp"], CORR["stride1"], CORR["stride2"], SLOPE)
GRID = 2 * (CORR["max_disp"] // CORR["stride2"]) + 1  # 21
PEER_CORR = dict(kernel_size=CORR["kernel_size"], patch_size=GRID, stride=CORR["stride1"], padding=0,
                 dilation_patch=CORR["stride2"])
CORR_TOL = dict(rtol=1e-4, atol=1e-5)
CORR_PROVIDERS = ("mama", "spatial_correlation_sampler")

# ----------------------------------------------------------------------------- ssim
SSIM_SIZE = sizes.DESTROY  # (4, 3, 256, 256)
PATCH = sizes.DESTROY_PATCH  # 32
LD = 4.0
DATA_RANGE = 2.0  # what mama.reference._ssim_range picks for these [-1, 1] patches
SSIM_TOL = dict(rtol=1e-5, atol=1e-5)
SSIM_PROVIDERS = ("mama", "pytorch_msssim", "kornia")


@pytest.fixture(autouse=True)
def _threads():
    before = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    yield
    torch.set_num_threads(before)


def _shape(t) -> str:
    return "x".join(map(str, t.shape))


def _max_err(x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    diff = (x - y).abs()
    return {"max_abs_err": diff.max().item(), "max_rel_err": (diff / y.abs().clamp_min(1e-6)).max().item()}


def _correlation_inputs():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(CORR_SIZE, generator=gen)
    b = torch.randn(CORR_SIZE, generator=gen)
    upstream = torch.randn((CORR_SIZE[0], GRID * GRID, CORR_SIZE[2], CORR_SIZE[3]), generator=gen)
    return a, b, upstream


def _peer_correlation(a, b):
    return spatial_correlation_sample(a, b, **PEER_CORR)


def _peer_as_mama(raw: torch.Tensor, channels: int) -> torch.Tensor:
    """The peer's (B, 21, 21, H, W) raw sums in mama's layout and normalisation."""
    B, _, _, H, W = raw.shape
    return F.leaky_relu(raw.reshape(B, GRID * GRID, H, W) / channels, SLOPE)


def _check_correlation(direction: str, a, b, upstream) -> dict[str, float]:
    """Once, outside the timing: the peer (mapped as in the docstring) equals mama."""
    channels = a.shape[1]
    if direction == "forward":
        ours = ops.correlation(a, b, *FLOWNETC)
        peer = _peer_as_mama(_peer_correlation(a, b), channels)
        torch.testing.assert_close(peer, ours, **CORR_TOL)
        return _max_err(peer, ours)
    a, b = a.detach().requires_grad_(), b.detach().requires_grad_()
    ours = ops.correlation(a, b, *FLOWNETC)
    grads_ours = torch.autograd.grad(ours, (a, b), upstream)
    raw = _peer_correlation(a, b)
    # upstream through /C and the LeakyReLU, so the peer's raw gradient is mama's.
    pulled = upstream * torch.where(raw.reshape(upstream.shape) > 0, 1.0, SLOPE) / channels
    grads_peer = torch.autograd.grad(raw, (a, b), pulled.reshape(raw.shape))
    errs = {}
    for name, gp, go in zip(("a", "b"), grads_peer, grads_ours):
        torch.testing.assert_close(gp, go, **CORR_TOL)
        errs.update({f"grad_{name}_{k}": v for k, v in _max_err(gp, go).items()})
    return errs


def make_correlation_case(direction: str, provider: str) -> tuple[Callable[[], object], dict]:
    """The timed call for one case and its extra_info; inputs made once, seeded, identical for
    both providers."""
    a, b, upstream = _correlation_inputs()
    info = {"provider": provider, "threads": THREADS, "a": _shape(a), "b": _shape(b)}
    if provider == "mama":
        fn = lambda x, y: ops.correlation(x, y, *FLOWNETC)  # noqa: E731
        info.update(call="mama.ops.correlation(a, b, 20, 1, 20, 1, 2, 0.1)", out=f"{CORR_SIZE[0]}x{GRID * GRID}x{CORR_SIZE[2]}x{CORR_SIZE[3]}")
        grad_out = upstream
    else:
        fn = _peer_correlation
        info.update(call=f"spatial_correlation_sample(a, b, {PEER_CORR})",
                    out=f"{CORR_SIZE[0]}x{GRID}x{GRID}x{CORR_SIZE[2]}x{CORR_SIZE[3]}")
        grad_out = upstream.reshape(CORR_SIZE[0], GRID, GRID, CORR_SIZE[2], CORR_SIZE[3])
        info.update(_check_correlation(direction, a, b, upstream))
    if direction == "forward":
        return (lambda: fn(a, b)), info
    a.requires_grad_()
    b.requires_grad_()
    info["upstream"] = _shape(grad_out)
    return (lambda: torch.autograd.grad(fn(a, b), (a, b), grad_out)), info


def _ssim_inputs():
    """A destroyer step's inputs (A, N, GT, G, BG), as benchmarks/bench_patch_destroy_loss.py makes them."""
    return destroy_inputs(SSIM_SIZE, PATCH)


PEER_SSIM = {
    "pytorch_msssim": lambda x, y: pytorch_msssim.ssim(x, y, data_range=DATA_RANGE, size_average=False,
                                                       win_size=reference.SSIM_WINDOW,
                                                       win_sigma=reference.SSIM_SIGMA),
    "kornia": lambda x, y: kornia.metrics.ssim(x, y, reference.SSIM_WINDOW, max_val=DATA_RANGE,
                                               padding="valid").mean((1, 2, 3)),
}


def _check_ssim(provider: str, Np, GTp, inputs) -> dict[str, float]:
    """Once, outside the timing: the peer's per-patch SSIM equals mama.reference._ssim with
    mama's own per-patch range, and the loss built on it equals mama's fused loss."""
    L = reference._ssim_range(Np)
    assert torch.all(L == DATA_RANGE), f"mama picks ranges {L.unique().tolist()}, the peers get {DATA_RANGE}"
    ours = reference._ssim(Np, GTp, L.view(-1, 1, 1, 1))
    peer = PEER_SSIM[provider](Np, GTp)
    torch.testing.assert_close(peer, ours, **SSIM_TOL)
    errs = _max_err(peer, ours)
    A, N, GT, G, BG = inputs
    Ap, Gp, BGp = (reference._to_patches(t, PATCH) for t in (A, G, BG))
    diff = torch.clamp(LD * (1 - peer), max=1.0)
    loss_peer = (diff * (BGp - Gp).pow(2).flatten(1).mean(1) + (1 - diff) * (Ap - Gp).pow(2).flatten(1).mean(1)).sum()
    loss_ours = ops.patch_destroy_loss(*inputs, patch=PATCH, ld=LD)
    torch.testing.assert_close(loss_peer, loss_ours, rtol=1e-5, atol=1e-5)
    errs["loss_rel_err"] = abs(loss_peer.item() - loss_ours.item()) / abs(loss_ours.item())
    return errs


def make_ssim_case(provider: str) -> tuple[Callable[[], object], dict]:
    inputs = _ssim_inputs()
    A, N, GT, G, BG = inputs
    info = {"provider": provider, "threads": THREADS, "frames": _shape(A), "patch": PATCH}
    if provider == "mama":
        info.update(call=f"mama.ops.patch_destroy_loss(A, N, GT, G, BG, patch={PATCH}, ld={LD}) (whole fused loss)")
        return (lambda: ops.patch_destroy_loss(A, N, GT, G, BG, patch=PATCH, ld=LD)), info
    Np = reference._to_patches(N, PATCH).contiguous()  # not timed: the peers' best case
    GTp = reference._to_patches(GT, PATCH).contiguous()
    info.update(patches=_shape(Np), data_range=DATA_RANGE, window=reference.SSIM_WINDOW,
                sigma=reference.SSIM_SIGMA, **_check_ssim(provider, Np, GTp, inputs))
    fn = PEER_SSIM[provider]
    return (lambda: fn(Np, GTp)), info


def _finite(result) -> bool:
    return all(torch.isfinite(t).all() for t in (result if isinstance(result, tuple) else (result,)))


@pytest.mark.parametrize("provider", CORR_PROVIDERS)
@pytest.mark.parametrize("direction", ["forward", "full"])
def test_peers_correlation(benchmark, direction, provider):
    benchmark.group = f"peers-correlation-{direction}-{'x'.join(map(str, CORR_SIZE))}"
    run, info = make_correlation_case(direction, provider)
    benchmark.extra_info.update(info)
    result = benchmark.pedantic(run, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    assert _finite(result)


@pytest.mark.parametrize("provider", SSIM_PROVIDERS)
def test_peers_ssim(benchmark, provider):
    benchmark.group = f"peers-ssim-forward-{'x'.join(map(str, SSIM_SIZE))}-patch{PATCH}"
    run, info = make_ssim_case(provider)
    benchmark.extra_info.update(info)
    # Milliseconds per call: enough rounds for a stable median on a noisy machine.
    result = benchmark.pedantic(run, rounds=10 * ROUNDS, iterations=1, warmup_rounds=2)
    assert _finite(result)
