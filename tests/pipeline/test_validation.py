"""Label-free checkpoint selection: the pseudo-anomaly set and its AUC (mama.evaluate.validation)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mama.data.datasets import load_video_frames, make_samples
from mama.evaluate import validation
from mama.evaluate.fusion import FusionWeights, search_weights
from mama.features.registry import build_extractor

SIZE = 32


class MotionScorer:
    """Scores each clip by how much its frames change (no network): fast motion and a
    foreign moving object both change frames more than normal walking does."""

    def __init__(self, constant: bool = False):
        self.constant = constant

    def stored_streams(self, store, video, frames):
        f = frames
        energy = (f[1:] - f[:-1]).abs().mean(dim=(1, 2, 3))  # (T-1,)
        sse = torch.stack([energy[t - 4 : t].mean() for t in range(4, f.shape[0])]).numpy()
        return {"sse": np.zeros_like(sse) if self.constant else sse}


@pytest.fixture(scope="module")
def videos(tiny_synth):
    return make_samples("synth", tiny_synth, "training")


@pytest.fixture(scope="module")
def validator(videos):
    extractor = build_extractor("dis", "foreground", "cpu")
    return validation.PseudoAnomalyValidator(extractor, videos, SIZE, clips_per_kind=9, kinds=("skip", "patch"),
                                             seed=0)


def test_the_set_is_made_of_training_clips(validator, videos):
    assert validator.clips == {"normal": 9, "skip": 9, "patch": 9}  # 3 videos x 3 clips each
    frames = [torch.from_numpy(load_video_frames(v, (SIZE, SIZE))) for v in videos]

    def find(window_frames):
        """(video, indices) of each frame of the window in the training videos."""
        hits = []
        for f in window_frames:
            hits.append([(v, int(i)) for v, fr in enumerate(frames) for i in range(len(fr)) if torch.equal(fr[i], f)])
        return hits

    normal, skip, patch = validator.windows[:3]
    assert (normal.kind, skip.kind, patch.kind) == ("normal", "skip", "patch")
    n = [h[0] for h in find(normal.frames)]
    assert len({v for v, _ in n}) == 1 and np.all(np.diff([i for _, i in n]) == 1)  # consecutive frames
    s = [h[0] for h in find(skip.frames)]
    assert len({v for v, _ in s}) == 1 and np.all(np.diff([i for _, i in s]) == validation.SKIP_STRIDE)
    # The patch window is the normal window with one square pasted per frame, moving.
    diff = (patch.frames != normal.frames).any(dim=1)  # (T, S, S)
    p = SIZE // validation.PATCH_FRACTION
    corners = []
    for d in diff:
        ys, xs = np.nonzero(d.numpy())
        assert ys.max() - ys.min() < p and xs.max() - xs.min() < p  # inside one p x p square
        corners.append((ys.min(), xs.min()))
    assert len(set(corners)) > 1  # it moves


def test_auc_separates_pseudo_anomalies_by_their_score(validator):
    motion = validator.score(MotionScorer())
    assert set(motion) == {"auc", "auc_skip", "auc_patch"}
    assert motion["auc_skip"] > 0.9 and motion["auc_patch"] > 0.7 and motion["auc"] > 0.8
    assert validator.score(MotionScorer(constant=True))["auc"] == pytest.approx(0.5)


def test_the_generator_stage_uses_skip_clips_only(videos):
    extractor = build_extractor("dis", "none", "cpu")
    v = validation.PseudoAnomalyValidator(extractor, videos[:1], SIZE, clips_per_kind=4, kinds=validation.GENERATOR_KINDS,
                                          seed=1)
    assert v.clips == {"normal": 4, "skip": 4}
    assert set(v.score(MotionScorer())) == {"auc", "auc_skip"}


def test_select_on_test_takes_the_best_auc_of_the_reference_grid(tiny_run):
    from mama.evaluate.engine import Scorer
    from mama.evaluate.streams import video_streams
    from mama.models.build import models_from_run
    from mama.models.checkpoint import read_file

    payload = read_file(tiny_run["destroyer"], "run")
    net_g, net_a, meta = models_from_run(payload, tiny_run["destroyer"], need_destroyer=True)
    scorer = Scorer(net_g.eval(), build_extractor(meta["motion"], meta["labels"], "cpu"), net_a.eval(), "cpu",
                    optimize=False)
    got = validation.test_set_auc(scorer, "synth", tiny_run["root"], meta["size"], with_destroyer=True)
    tests = make_samples("synth", tiny_run["root"], "testing")
    streams = video_streams(scorer, tests, meta["size"], progress=False)
    best, auc = search_weights(streams, [t.labels[4:] for t in tests], with_destroyer=True)
    assert got == pytest.approx(auc) and isinstance(best, FusionWeights) and best.d in (0.25, 0.5, 0.75, 1.0)
