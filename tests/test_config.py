"""Run settings: one source for every default, resolved by preset and dataset (mama.config)."""
from __future__ import annotations

import pytest

from mama.config import BASE_WIDTH, FRAME_SIZE, PRESETS, TrainConfig
from mama.errors import MamaError


def test_defaults_resolve_to_the_paper():
    c = TrainConfig().resolved()
    assert (c.preset, c.motion, c.labels, c.size, c.base, c.batchnorm, c.holdout) == (
        "paper", "flownet2sd", "deeplabv3", FRAME_SIZE, BASE_WIDTH, "eval-after-validation", 0)
    assert (c.iters, c.lr_g, c.lr_d, c.lr_a, c.weight_decay, c.patch) == (60_000, 1e-4, 1e-5, 1e-4, 1e-4, 32)
    assert c.out == "runs/ped2_generator"
    fast = TrainConfig(preset="fast", dataset="avenue", stage="destroyer").resolved()
    assert (fast.motion, fast.labels, fast.batchnorm, fast.holdout) == ("dis", "foreground", "train", 1)
    assert (fast.iters, fast.lr_a, fast.weight_decay) == (15_000, 2e-4, 2e-4)
    assert set(PRESETS) == {"paper", "fast"}


@pytest.mark.parametrize("size,patch", [(256, 32), (128, 16), (64, 8), (32, 4)])
def test_the_destroyers_patches_keep_the_papers_8x8_grid(size, patch):
    assert TrainConfig(size=size).resolved().patch == patch
    assert TrainConfig(size=size, patch=size // 4).resolved().patch == size // 4  # given: kept


def test_bad_settings_are_refused_with_the_flag_and_the_fix():
    with pytest.raises(MamaError, match=r"--size 100 must be a positive multiple of 8 .*e\.g\. --size 256"):
        TrainConfig(size=100).resolved()
    with pytest.raises(MamaError, match=r"--size 0 must be a positive multiple of 8"):
        TrainConfig(size=0).resolved()
    with pytest.raises(MamaError, match=r"patch 24 does not divide --size 64"):
        TrainConfig(size=64, patch=24).resolved()
    with pytest.raises(MamaError, match=r"unknown --preset 'slow'; use one of paper, fast"):
        TrainConfig(preset="slow").resolved()
    with pytest.raises(MamaError, match=r"unknown --stage 'both'"):
        TrainConfig(stage="both").resolved()
