"""Frame-level metrics and score fusion, checked against scikit-learn and by construction."""
from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from mama import metrics
from mama.evaluate import fusion


def _videos(rng, n=4):
    scores, labels = [], []
    for _ in range(n):
        t = int(rng.integers(40, 90))
        lab = np.zeros(t, dtype=np.uint8)
        s0 = int(rng.integers(5, t // 2))
        lab[s0 : s0 + int(rng.integers(5, t // 2))] = 1
        scores.append(rng.normal(size=t) + 1.5 * lab)
        labels.append(lab)
    return scores, labels


def test_summary_matches_sklearn():
    rng = np.random.default_rng(0)
    scores, labels = _videos(rng)
    got = metrics.summarize(scores, labels)
    flat_s, flat_l = np.concatenate(scores), np.concatenate(labels)
    assert got["micro_auc"] == pytest.approx(roc_auc_score(flat_l, flat_s), abs=1e-12)
    assert got["macro_auc"] == pytest.approx(np.mean([roc_auc_score(l, s) for s, l in zip(scores, labels)]), abs=1e-12)
    assert got["ap"] == pytest.approx(average_precision_score(flat_l, flat_s), abs=1e-12)
    assert got["frames"] == flat_l.size and got["abnormal_frames"] == int(flat_l.sum()) and got["videos"] == 4
    # EER: the ROC point where FPR and FNR meet, within the ROC's resolution.
    fpr, tpr, _ = roc_curve(flat_l, flat_s)
    i = np.argmin(np.abs((1 - tpr) - fpr))
    assert abs(got["eer"] - fpr[i]) <= max(abs(fpr[i] - (1 - tpr[i])), 1.0 / flat_l.size) + 1e-9


def test_macro_skips_single_class_videos_and_perfect_separation():
    scores = [np.array([0.1, 0.2, 0.9, 0.8]), np.array([0.5, 0.4, 0.3])]
    labels = [np.array([0, 0, 1, 1]), np.array([0, 0, 0])]
    got = metrics.summarize(scores, labels)
    assert got["macro_auc"] == 1.0  # only the first video has both classes
    assert got["eer"] == pytest.approx(0.0, abs=1e-12)
    assert math.isnan(metrics.micro_auc(np.array([0.1, 0.2]), np.array([0, 0])))


def test_metric_input_errors():
    with pytest.raises(ValueError, match="3 scores but 2 labels"):
        metrics.micro_auc(np.zeros(3), np.zeros(2))
    with pytest.raises(ValueError, match="NaN or inf"):
        metrics.micro_auc(np.array([0.0, np.nan]), np.array([0, 1]))
    with pytest.raises(ValueError, match="video 0: 2 scores but 3 labels"):
        metrics.summarize([np.zeros(2)], [np.zeros(3)])


def test_offline_fusion_is_the_reference_recipe():
    rng = np.random.default_rng(1)
    streams = {n: rng.normal(size=50) * rng.uniform(0.1, 5) + rng.normal() for n in fusion.STREAMS}
    w = fusion.FusionWeights(0.5, 1.5, 3.0, 0.75)
    z = {n: (x - x.mean()) / x.std() for n, x in streams.items()}
    raw = sum(w[n] * z[n] for n in fusion.STREAMS)
    expected = (raw - raw.min()) / (raw.max() - raw.min())
    np.testing.assert_allclose(fusion.fuse_offline(streams, w), expected, rtol=0, atol=1e-12)
    smoothed = fusion.fuse_offline(streams, w, sigma=10)
    assert smoothed.shape == (50,) and smoothed.std() < expected.std()


def test_offline_smoothing_reflects_at_the_edges_as_scipys_default():
    # The reference calls gaussian_filter1d(distance, sigma=10): scipy's default mode, 'reflect'.
    rng = np.random.default_rng(4)
    x = np.r_[np.linspace(0.0, 1.0, 30), rng.uniform(size=60)]
    streams = {"sse": x}
    w = fusion.FusionWeights(0, 0, 1)
    got = fusion.fuse_offline(streams, w, sigma=10)
    from scipy.ndimage import gaussian_filter1d

    np.testing.assert_allclose(got, gaussian_filter1d(fusion.minmax(x), 10), rtol=0, atol=1e-12)
    # The edge mode matters within ~4 sigma of each end: 'nearest' would give other values there.
    nearest = gaussian_filter1d(fusion.minmax(x), 10, mode="nearest")
    assert np.abs(got[:20] - nearest[:20]).max() > 1e-3
    np.testing.assert_allclose(got[45:46], nearest[45:46], atol=1e-2)


def test_default_weights_are_in_the_reference_family():
    # a + b + c = 5 and d one of the reference grid's four values; fixed, not fitted.
    w = fusion.PAPER_WEIGHTS
    a, b, c, d = w.values()
    assert a > 0 and b > 0 and c > 0 and a + b + c == pytest.approx(5.0)
    assert d in (0.25, 0.5, 0.75, 1.0)
    grid = fusion.oracle_grid(with_destroyer=True)
    assert any(all(abs(g[n] - w[n]) < 1e-9 for n in fusion.STREAMS) for g in grid)


def test_online_fusion_is_causal():
    rng = np.random.default_rng(2)
    streams = {n: rng.normal(size=80) for n in fusion.GENERATOR_STREAMS}
    stats = fusion.StreamStats.from_streams([{n: rng.normal(size=200) for n in fusion.GENERATOR_STREAMS}])
    w = fusion.FusionWeights(1, 1, 3)
    full = fusion.fuse_online(streams, w, stats, sigma=3)
    changed = {n: x.copy() for n, x in streams.items()}
    for x in changed.values():
        x[50:] += 100.0  # the future changes ...
    again = fusion.fuse_online(changed, w, stats, sigma=3)
    np.testing.assert_array_equal(full[:50], again[:50])  # ... the past does not
    assert (again[50:] > full[50:]).all()


def test_weights_parse_and_missing_stream():
    assert fusion.FusionWeights.parse("1,2,2") == fusion.FusionWeights(1, 2, 2, 0)
    w = fusion.FusionWeights.parse("1,2,2,0.5")
    assert w["destroyer_sse"] == 0.5 and w == fusion.FusionWeights(sim_motion=1, sim_label=2, sse=2, destroyer_sse=0.5)
    assert str(w) == "1,2,2,0.5" and fusion.FusionWeights.parse(str(w)) == w
    # the checkpoints' form, as written before the weights were keyed by stream
    assert w.as_dict() == {"a": 1.0, "b": 2.0, "c": 2.0, "d": 0.5} and fusion.FusionWeights.from_dict(w.as_dict()) == w
    assert w.without("sim_label", "sse") == fusion.FusionWeights(sim_motion=1, destroyer_sse=0.5)
    with pytest.raises(ValueError, match="3 or 4 comma-separated"):
        fusion.FusionWeights.parse("1,x")
    with pytest.raises(ValueError, match="sim_label .* not computed"):
        fusion.fuse_offline({"sim_motion": np.ones(3), "sse": np.arange(3.0)}, fusion.FusionWeights(1, 1, 1))


def test_oracle_grid_and_search_find_the_informative_stream():
    grid = fusion.oracle_grid(with_destroyer=False)
    assert all(all(w[n] > 0 for n in fusion.GENERATOR_STREAMS) and abs(sum(w[n] for n in fusion.GENERATOR_STREAMS) - 5) < 1e-9
               for w in grid)
    assert len(fusion.oracle_grid(with_destroyer=True)) == 4 * len(grid)
    rng = np.random.default_rng(3)
    labels = [np.r_[np.zeros(30), np.ones(10)]]
    videos = [{"sim_motion": rng.normal(size=40), "sim_label": rng.normal(size=40), "sse": labels[0] + 0.05 * rng.normal(size=40)}]
    best, auc = fusion.search_weights(videos, labels, with_destroyer=False)
    assert auc == pytest.approx(metrics.micro_auc(fusion.fuse_offline(videos[0], best), labels[0]))
    assert auc > 0.95 and best["sse"] >= max(best["sim_motion"], best["sim_label"])
