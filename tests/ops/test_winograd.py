"""mama::winograd_conv3x3 (C++ CPU kernel): the 3x3 convolution F.conv2d computes, by
Winograd F(2x2, 3x3) and F(4x4, 3x3), for every geometry the inference copies can meet."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mama import ops, reference
from tests.support import poisoned_empty

# (N, C, K, H, W, dilation): odd and even sizes, H != W, maps smaller than a tile, dilations
# that do and do not divide the map, and real widths of the generator and DeepLab.
GEOMETRIES = [
    (1, 1, 1, 1, 1, 1),
    (1, 3, 5, 2, 2, 1),
    (2, 7, 9, 5, 8, 1),
    (3, 16, 12, 9, 7, 1),
    (1, 130, 129, 6, 11, 1),  # C and K not multiples of the SIMD width
    (2, 8, 8, 16, 16, 2),
    (2, 8, 6, 13, 10, 3),  # dilation not dividing either side
    (1, 4, 4, 7, 7, 4),
    (2, 256, 128, 16, 16, 2),  # DeepLab layer3-like
    (4, 512, 512, 8, 8, 1),  # the F2LM bottleneck at 64x64 input
    (1, 128, 128, 33, 31, 1),  # more tiles than one 128-tile block
]


def conv_case(geometry, seed, channels_last=True, bias=True):
    n, c, k, h, w, d = geometry
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=gen)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    weight = torch.randn(k, c, 3, 3, generator=gen) / (3 * c**0.5)
    b = torch.randn(k, generator=gen) if bias else None
    return x, weight, b, d


# Error relative to the output scale, measured against float64 at the real widths: F(2x2)
# ~4e-7, F(4x4) ~8e-6 (its transforms have coefficients up to 8), direct float32 ~2e-6.
TOLERANCE = {2: 3e-6, 4: 3e-5}
TILES = (2, 4)


def assert_conv_close(got, want, tile):
    assert torch.isfinite(got).all(), "kernel left non-finite values (unwritten output?)"
    scale = want.abs().max().item() + 1e-6
    torch.testing.assert_close(got, want, atol=TOLERANCE[tile] * scale, rtol=1e-4)


@pytest.mark.parametrize("tile", TILES)
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_matches_conv2d(geometry, relu, tile):
    x, weight, bias, d = conv_case(geometry, seed=sum(geometry) + relu)
    want = F.conv2d(x.double(), weight.double(), bias.double(), padding=d, dilation=d)
    if relu:
        want = want.relu()
    with poisoned_empty():
        got = ops.winograd_conv3x3(x, ops.winograd_filter(weight, tile), bias, d, relu)
    assert got.shape == want.shape and got.dtype == torch.float32
    assert got.is_contiguous(memory_format=torch.channels_last)
    assert_conv_close(got.double(), want, tile)


@pytest.mark.parametrize("tile", TILES)
@pytest.mark.parametrize("channels_last,bias", [(False, True), (True, False), (False, False)])
def test_any_input_layout_and_no_bias(channels_last, bias, tile):
    x, weight, b, d = conv_case((2, 24, 20, 10, 14, 1), seed=5, channels_last=channels_last, bias=bias)
    got = ops.winograd_conv3x3(x, ops.winograd_filter(weight, tile), b, d)
    assert_conv_close(got, F.conv2d(x, weight, b, padding=d, dilation=d), tile)


@pytest.mark.parametrize("tile", TILES)
def test_permuted_view_input(tile):
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(2, 9, 11, 17, generator=gen).permute(0, 3, 1, 2)  # (2, 17, 9, 11), odd strides
    weight = torch.randn(6, 17, 3, 3, generator=gen)
    got = ops.winograd_conv3x3(x, ops.winograd_filter(weight, tile))
    assert_conv_close(got, F.conv2d(x, weight, padding=1), tile)


@pytest.mark.parametrize("tile", TILES)
def test_reference_is_the_plain_convolution(tile):
    """mama.reference recovers the filters from u exactly and runs F.conv2d: the oracle and
    the fallback when the extension is missing."""
    x, weight, bias, d = conv_case((2, 5, 7, 9, 6, 2), seed=7)
    got = reference.winograd_conv3x3(x, ops.winograd_filter(weight, tile), bias, d, True)
    torch.testing.assert_close(got, F.conv2d(x, weight, bias, padding=d, dilation=d).relu(), atol=1e-5, rtol=1e-5)


def test_filter_transform_values():
    """u[(i, j)] = (G g G^T)[i, j]: the corners are the filter's corners, the centre mixes all 9."""
    weight = torch.randn(3, 2, 3, 3, dtype=torch.float64)
    u = ops.winograd_filter(weight, 2).view(4, 4, 2, 3)
    torch.testing.assert_close(u[0, 0], weight[:, :, 0, 0].T)
    torch.testing.assert_close(u[3, 3], weight[:, :, 2, 2].T)
    torch.testing.assert_close(u[1, 1], weight.sum(dim=(2, 3)).T / 4)
    u4 = ops.winograd_filter(weight, 4).view(6, 6, 2, 3)  # G's first row is (1/4, 0, 0)
    torch.testing.assert_close(u4[0, 0], weight[:, :, 0, 0].T / 16)
    torch.testing.assert_close(u4[5, 5], weight[:, :, 2, 2].T)


def test_opcheck():
    x, weight, bias, d = conv_case((2, 6, 5, 7, 9, 2), seed=8)
    torch.library.opcheck(torch.ops.mama.winograd_conv3x3.default, (x, ops.winograd_filter(weight), bias, d, True),
                          test_utils=("test_schema", "test_faketensor"))


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda x, u: (x[0], u, None, 1), "x must be"),
        (lambda x, u: (x, u[:8], None, 1), "u must be"),
        (lambda x, u: (x, torch.zeros(25, 4, 5), None, 1), r"u must be \(16 or 36"),
        (lambda x, u: (x, u[:, :3], None, 1), "input channels"),
        (lambda x, u: (x.double(), u.double(), None, 1), "float32 only"),
        (lambda x, u: (x, u, torch.zeros(3), 1), "bias must be"),
        (lambda x, u: (x, u, None, 0), "dilation must be"),
    ],
)
def test_bad_inputs(make, match):
    x, weight, _, _ = conv_case((1, 4, 5, 6, 6, 1), seed=9)
    with pytest.raises(RuntimeError, match=match):
        torch.ops.mama.winograd_conv3x3(*make(x, ops.winograd_filter(weight)), False)


def test_filter_rejects_non_3x3_and_other_tiles():
    with pytest.raises(ValueError, match=r"weight must be \(K, C, 3, 3\)"):
        ops.winograd_filter(torch.zeros(4, 4, 5, 5))
    with pytest.raises(ValueError, match=r"tile must be one of \[2, 4\], got 3"):
        ops.winograd_filter(torch.zeros(4, 4, 3, 3), 3)
