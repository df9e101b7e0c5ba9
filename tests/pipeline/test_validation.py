"""Label-free checkpoint selection: the pseudo-anomaly set and its AUC (mama.evaluate.validation)."""
from __future__ import annotations

import dataclasses
import math

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
    return validation.PseudoAnomalyValidator(extractor, videos, SIZE, clips_per_kind=9, kinds=validation.PSEUDO_KINDS,
                                             seed=0)


def _find(window_frames, frames):
    """(video, index) of each frame of a window in the training videos (None: a made-up frame)."""
    hits = []
    for f in window_frames:
        found = [(v, int(i)) for v, fr in enumerate(frames) for i in range(len(fr)) if torch.equal(fr[i], f)]
        hits.append(found[0] if found else None)
    return hits


def test_the_set_is_made_of_training_clips(validator, videos):
    assert validator.clips == {"normal": 9, **{k: 9 for k in validation.PSEUDO_KINDS}}  # 3 videos x 3 clips each
    frames = [torch.from_numpy(load_video_frames(v, (SIZE, SIZE))) for v in videos]
    per_video = len(validation.PSEUDO_KINDS) + 1
    first = {w.kind: w for w in validator.windows[:per_video]}
    normal = _find(first["normal"].frames, frames)
    assert len({v for v, _ in normal}) == 1 and np.all(np.diff([i for _, i in normal]) == 1)  # consecutive frames
    for kind, speed in validation.SPEEDUPS.items():  # the same video played faster: steps of `speed` on average
        steps = np.diff([i for _, i in _find(first[kind].frames, frames)])
        assert set(steps) <= {math.floor(speed), math.ceil(speed)} and steps.mean() == pytest.approx(speed, abs=0.26)
    assert torch.equal(first["reverse"].frames, first["normal"].frames.flip(0))
    # (appearance moves at a walker's pace: under a pixel per frame at this size, so not checked)
    for kind, moves in (("patch", True), ("object", True), ("appearance", None), ("stop", False)):
        # The normal window with one cut-out pasted per frame, at most a quarter (patch) or half the frame wide.
        diff = (first[kind].frames != first["normal"].frames).any(dim=1)  # (T, S, S)
        assert diff.any(dim=(1, 2)).all(), kind
        corners = set()
        for d in diff:
            ys, xs = np.nonzero(d.numpy())
            limit = SIZE // validation.PATCH_FRACTION if kind == "patch" else SIZE // 2 + 1
            assert ys.max() - ys.min() < limit and xs.max() - xs.min() < limit, kind
            corners.add((ys.min(), xs.min()))
        assert moves is None or (len(corners) > 1) == moves, kind


def test_auc_is_the_mean_of_the_kinds_and_separates_by_score(validator):
    motion = validator.score(MotionScorer())
    assert set(motion) == {"auc", *(f"auc_{k}" for k in validation.PSEUDO_KINDS)}
    assert motion["auc"] == pytest.approx(np.mean([motion[f"auc_{k}"] for k in validation.PSEUDO_KINDS]))
    # Faster clips change more between frames the faster they are; a fast square too.
    assert motion["auc_fast3x"] > 0.9 and motion["auc_patch"] > 0.7
    assert motion["auc_fast1.5x"] < motion["auc_fast3x"]
    assert validator.score(MotionScorer(constant=True))["auc"] == pytest.approx(0.5)


def test_the_set_can_be_asked_for_one_kind(videos):
    extractor = build_extractor("dis", "none", "cpu")
    v = validation.PseudoAnomalyValidator(extractor, videos[:1], SIZE, clips_per_kind=4, kinds=("fast2x",), seed=1)
    assert v.clips == {"normal": 4, "fast2x": 4}
    assert set(v.score(MotionScorer())) == {"auc", "auc_fast2x"}


def test_sped_up_clips_need_long_enough_videos(videos):
    from mama.errors import MamaError

    short = [dataclasses.replace(v, num_frames=6) for v in videos]  # fast1.5x needs 7 frames, fast2x 9
    with pytest.raises(MamaError, match=r"the validation videos \(01, 02, 03\) are too short for pseudo-anomalous "
                                        r"\(sped-up\) clips: each has fewer than 7 frames; use longer training videos"):
        validation.check_pseudo_anomalies(short, tuple(validation.SPEEDUPS))
    validation.check_pseudo_anomalies(short, validation.PSEUDO_KINDS)  # pasted objects fit in any clip


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
    assert got == pytest.approx(auc) and isinstance(best, FusionWeights) and best["destroyer_sse"] in (0.25, 0.5, 0.75, 1.0)
