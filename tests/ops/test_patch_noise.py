"""patch_noise / random_patch_mask: the destroyer's synthetic patch damage (mama.ops)."""
from __future__ import annotations

import pytest
import torch
from torchvision.transforms.v2.functional import gaussian_blur

from mama.errors import MamaError
from mama.ops import NOISE_KINDS, patch_noise, random_patch_mask, random_rate


def frames(shape=(3, 3, 64, 96), seed=0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=gen, dtype=dtype) * 2 - 1


def pixel_mask(mask, H, W):
    rows, cols = mask.shape
    return mask.repeat_interleave(H // rows, 0).repeat_interleave(W // cols, 1)


MASK = torch.tensor([[True, False, False, True], [False, True, False, False]])  # 2 x 4 grid


@pytest.mark.parametrize("kind", NOISE_KINDS)
def test_changes_only_selected_patches(kind):
    x = frames()
    y = patch_noise(x, MASK, kind=kind, p=0.3, seed=1)
    selected = pixel_mask(MASK, 64, 96).expand_as(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert torch.equal(y[~selected], x[~selected])  # bit for bit
    assert not torch.equal(y[selected], x[selected])
    assert torch.equal(x, frames())  # the input is left alone


@pytest.mark.parametrize("kind", NOISE_KINDS)
def test_deterministic_for_a_seed(kind):
    x = frames()
    a = patch_noise(x, MASK, kind=kind, p=0.3, seed=5)
    b = patch_noise(x, MASK, kind=kind, p=0.3, seed=5)
    c = patch_noise(x, MASK, kind=kind, p=0.3, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and torch.equal(a, c)


@pytest.mark.parametrize("kind", ["dropout", "salt_pepper"])
def test_different_seeds_differ(kind):
    x = frames()
    assert not torch.equal(patch_noise(x, MASK, kind=kind, seed=1), patch_noise(x, MASK, kind=kind, seed=2))


@pytest.mark.parametrize("p", [0.05, 0.3, 0.5])
def test_dropout_statistics(p):
    """Each (sample, patch, channel) is zeroed with probability p; kept ones scaled by 1/(1-p)."""
    B, C, H, W, grid = 8, 3, 64, 64, 8
    x = frames((B, C, H, W), seed=3).abs() + 0.1  # no zeros of its own
    mask = torch.ones(grid, grid, dtype=torch.bool)
    y = patch_noise(x, mask, kind="dropout", p=p, seed=4)
    tiles = lambda t: t.reshape(B, C, grid, H // grid, grid, W // grid)  # noqa: E731
    zeroed = (tiles(y) == 0).all(dim=(3, 5))  # (B, C, grid, grid)
    # Whole (sample, channel, patch) units are dropped or kept, never parts of one.
    assert torch.equal((tiles(y) == 0).any(dim=(3, 5)), zeroed)
    n = zeroed.numel()
    assert abs(zeroed.float().mean().item() - p) < 4 * (p * (1 - p) / n) ** 0.5
    kept = y != 0
    torch.testing.assert_close(y[kept], x[kept] / (1 - p))


def test_salt_and_pepper_statistics():
    B, C, H, W = 4, 3, 64, 64
    x = frames((B, C, H, W), seed=6) * 0.5  # never exactly +-1 by itself
    mask = torch.zeros(4, 4, dtype=torch.bool)
    mask[1:3] = True
    p = 0.2
    y = patch_noise(x, mask, kind="salt_pepper", p=p, seed=7)
    selected = pixel_mask(mask, H, W)
    hit = (y != x).any(dim=1)  # (B, H, W): pixels that were set
    assert not hit[:, ~selected].any()
    values = y.permute(0, 2, 3, 1)[hit]  # (n, C)
    assert torch.equal(values, values[:, :1].expand_as(values))  # all channels alike
    assert set(values[:, 0].tolist()) == {1.0, -1.0}
    n = selected.sum().item() * B
    assert abs(hit[:, selected].float().mean().item() - p) < 4 * (p * (1 - p) / n) ** 0.5
    assert abs((values[:, 0] == 1).float().mean().item() - 0.5) < 0.05


@pytest.mark.parametrize("kind,sigma", [("blur_weak", 1.0), ("blur_strong", 3.0)])
def test_blur_is_each_patch_blurred_alone(kind, sigma):
    x = frames((2, 3, 32, 64), seed=8)
    mask = torch.tensor([[True, False], [False, True]])
    y = patch_noise(x, mask, kind=kind)
    for top, left in [(0, 0), (16, 32)]:
        patch = x[:, :, top : top + 16, left : left + 32]
        size = 2 * int(torch.ceil(torch.tensor(3 * sigma))) + 1
        want = gaussian_blur(patch, [size, size], [sigma, sigma])
        torch.testing.assert_close(y[:, :, top : top + 16, left : left + 32], want)


def test_strong_blur_smooths_more_than_weak():
    x = frames((2, 3, 64, 64), seed=9)
    mask = torch.ones(2, 2, dtype=torch.bool)
    roughness = lambda t: (t[..., 1:] - t[..., :-1]).abs().mean().item()  # noqa: E731
    weak, strong = (patch_noise(x, mask, kind=k) for k in ("blur_weak", "blur_strong"))
    assert roughness(strong) < roughness(weak) < roughness(x)


def test_float64_and_small_patches():
    x = frames((1, 2, 8, 8), seed=10, dtype=torch.float64)
    mask = torch.eye(4, dtype=torch.bool)  # 2 x 2 patches: the blur kernel shrinks to fit
    for kind in NOISE_KINDS:
        y = patch_noise(x, mask, kind=kind, seed=11)
        assert y.dtype == torch.float64
        assert torch.equal(y[..., ~pixel_mask(mask, 8, 8)], x[..., ~pixel_mask(mask, 8, 8)])


def test_random_rate_is_uniform_and_rounded_to_two_decimals():
    gen = torch.Generator().manual_seed(5)
    rates = [random_rate(0.05, 0.5, gen) for _ in range(20000)]
    assert all(0.05 <= r <= 0.5 and r == round(r, 2) for r in rates)
    assert len(set(rates)) == 46  # every value 0.05, 0.06, ..., 0.50 occurs
    assert abs(sum(rates) / len(rates) - 0.275) < 0.004  # 4 sd of the mean of 20k draws


def test_random_patch_mask_is_binomial_per_patch_and_deterministic():
    counts = []
    for seed in range(400):
        mask = random_patch_mask((8, 8), (0.05, 0.5), generator=torch.Generator().manual_seed(seed))
        assert mask.shape == (8, 8) and mask.dtype == torch.bool
        counts.append(int(mask.sum()))
    counts = torch.tensor(counts, dtype=torch.float64)
    # Each patch on its own with probability rate ~ U[0.05, 0.5]: mean 64 * 0.275 = 17.6 patches,
    # and a count that is sometimes zero (P(0) ~ 0.95^64 = 4% at rate 0.05; ~0.4% overall).
    assert abs(counts.mean().item() - 17.6) < 1.0
    assert counts.max() > 30 and counts.min() <= 1
    none = [int(random_patch_mask((8, 8), (0.05, 0.05), generator=torch.Generator().manual_seed(s)).sum()) for s in range(300)]
    assert none.count(0) > 0  # zero-patch masks occur
    same = [random_patch_mask(generator=torch.Generator().manual_seed(3)) for _ in range(2)]
    assert torch.equal(*same)
    assert int(random_patch_mask((2, 3), (0.0, 0.0), generator=torch.Generator().manual_seed(0)).sum()) == 0
    assert int(random_patch_mask((2, 3), (1.0, 1.0), generator=torch.Generator().manual_seed(0)).sum()) == 6


def test_bad_arguments_raise():
    x = frames((1, 3, 64, 64))
    mask = torch.ones(8, 8, dtype=torch.bool)
    with pytest.raises(MamaError, match="unknown kind 'gauss'; use one of dropout"):
        patch_noise(x, mask, kind="gauss")
    with pytest.raises(MamaError, match="the 5x8 patch grid must divide the 64x64 frame"):
        patch_noise(x, torch.ones(5, 8, dtype=torch.bool))
    with pytest.raises(MamaError, match="2-D bool mask"):
        patch_noise(x, torch.ones(8, 8))
    with pytest.raises(MamaError, match=r"dropout needs 0 <= p < 1, got p=1.0"):
        patch_noise(x, mask, kind="dropout", p=1.0)
    with pytest.raises(MamaError, match="rate_range"):
        random_patch_mask((8, 8), (0.6, 0.5))
