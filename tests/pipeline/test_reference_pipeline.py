"""The benchmark baseline (benchmarks/reference_pipeline.py) computes what mama computes, and
the feature store (mama/features/store.py) is exact.

Both pipelines run on the same models, weights and inputs (benchmarks/workload.py); only the
order of floating-point work differs (batched vs one clip at a time, fused vs plain ops),
hence the stated tolerances.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from benchmarks.workload import make_workload
from mama.train import trainer as trainer_mod

# float32, batched vs per-clip convolutions and fused vs reference sim terms.
STREAM_RTOL, STREAM_ATOL = 1e-4, 1e-6
LOSS_RTOL, LOSS_ATOL = 1e-4, 1e-6


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: these small models run several times faster that way on a shared
    2-core machine (no OpenMP barrier waits on descheduled threads)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _assert_streams_close(ours: dict, ref: dict) -> None:
    assert ours.keys() == ref.keys()
    for k in ours:
        assert np.isfinite(ours[k]).all(), k
        np.testing.assert_allclose(ours[k], ref[k], rtol=STREAM_RTOL, atol=STREAM_ATOL, err_msg=k)


def test_eval_streams_match_with_weight_free_providers():
    w = make_workload("light", size=64, batch=2, base=8, frames=10, seed=3)
    net_g, net_a = w.generator(), w.destroyer()
    ours = w.scorer(net_g, net_a).video_streams(w.video, w.background)
    ref = w.reference().video_streams(net_g, w.video, w.background, net_a)
    assert set(ours) == {"sse", "sim_motion", "sim_label", "destroyer_sse"}
    assert len(ours["sse"]) == 10 - 4
    assert ours["sim_motion"].std() > 0  # the streams vary from clip to clip, so the match means something
    _assert_streams_close(ours, ref)


def test_eval_streams_match_with_flownet2sd_and_deeplab_architectures():
    # The paper's provider architectures with random weights, at 64x64: one clip is enough
    # to exercise FlowNet2-SD's cache point and DeepLab's stride-8 logits against full passes.
    w = make_workload("paper", size=64, batch=1, base=8, frames=5, seed=4)
    net_g = w.generator()
    ours = w.scorer(net_g).video_streams(w.video)
    ref = w.reference().video_streams(net_g, w.video)
    assert set(ours) == {"sse", "sim_motion", "sim_label"}
    _assert_streams_close(ours, ref)


@pytest.mark.parametrize("cache", [True, False], ids=["feature-cache", "extractor"])
def test_generator_step_losses_match(cache):
    w = make_workload("light", size=64, batch=4, base=8, seed=5)
    ours = w.generator_trainer(cache=cache)
    net_g, net_d = copy.deepcopy(ours.net_g), copy.deepcopy(ours.net_d)
    opt_g = torch.optim.AdamW(net_g.parameters(), lr=ours.cfg.lr_g, weight_decay=ours.cfg.weight_decay)
    opt_d = torch.optim.AdamW(net_d.parameters(), lr=ours.cfg.lr_d, weight_decay=ours.cfg.weight_decay)
    got = trainer_mod.as_floats(ours.train_step(w.batch_items))
    want = w.reference().generator_step(net_g, net_d, opt_g, opt_d, w.batch_items)
    for k in ("loss/g_total", "loss/intensity", "loss/gradient", "loss/adversarial", "loss/sim_motion",
              "loss/sim_label", "loss/d", "train/psnr"):
        assert got[k] == pytest.approx(want[k], rel=LOSS_RTOL, abs=LOSS_ATOL), k
    # loss/adversarial equal: both take it from D before this step's update (the reference order).
    assert all(p.grad is not None for p in net_g.parameters())


def test_destroyer_step_loss_matches():
    w = make_workload("light", size=64, batch=4, base=8, seed=6)
    net_g = w.generator()
    ours = w.destroyer_trainer(copy.deepcopy(net_g), cache=True)
    net_a = copy.deepcopy(ours.net_a)
    opt_a = torch.optim.AdamW(net_a.parameters(), lr=ours.cfg.lr_g, weight_decay=ours.cfg.weight_decay)
    # A fixed damage, so both steps see the same destroyed input: darken the first patch column.
    def damage(pred):
        out = pred.clone()
        out[..., :, :32] = out[..., :, :32] * 0.3 - 0.5
        return out

    ours.damage = damage
    got = trainer_mod.as_floats(ours.train_step(w.batch_items))
    want = w.reference().destroyer_step(net_g, net_a, opt_a, w.batch_items, damage, ours.cfg.patch, ours.cfg.ld)
    assert got["loss/destroy"] == pytest.approx(want["loss/destroy"], rel=LOSS_RTOL, abs=LOSS_ATOL)
    for (name, a), b in zip(ours.net_a.named_parameters(), net_a.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=f"destroyer {name} after one step")


def _one_by_one(w, clips, bg):
    """The reference's inputs: every clip on its own, every frame's labels and pair's flow anew."""
    with torch.no_grad():
        return w.reference().batch_inputs(clips, bg)


def test_feature_store_is_exact_and_computes_each_entry_once():
    from mama.features.store import FeatureStore, TensorSource

    w = make_workload("light", size=64, batch=4, base=8, frames=12, seed=7)
    items = w.batch_items
    # Overlapping clips of one 12-frame video (targets 4 and 5 share 3 input frames and 2 pairs).
    frames = w.video[:6]
    clips = torch.stack([frames[0:5], frames[1:6]])
    bg = w.background.expand(2, -1, -1, -1)
    store = FeatureStore(w.extractor, TensorSource({0: w.video}, {0: w.background}))
    got = store.clip_inputs(clips, [0, 0], [4, 5])
    want = _one_by_one(w, clips, bg)
    for name, a, b in zip(got._fields, got, want):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=name)
    # The video's one canonical chunk (chunk 32 > 12 frames): every frame and pair, once.
    assert store.computed == {"labels": 12, "flows": 11, "preds": 0}
    again = store.clip_inputs(clips.flip(0), [0, 0], [5, 4])
    assert store.computed == {"labels": 12, "flows": 11, "preds": 0}
    torch.testing.assert_close(again.flows, got.flows.flip(0), rtol=0, atol=0)
    # Training batches read their videos from the trainer's source.
    train = FeatureStore(w.extractor, w.train_source)
    batch = train.clip_inputs(items["clip"], items["video"], items["target"])
    want = _one_by_one(w, items["clip"], items["background"])
    for name, a, b in zip(batch._fields, batch, want):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=name)
    before = dict(train.computed)
    train.clip_inputs(items["clip"], items["video"], items["target"])
    assert train.computed == before

    net_g = w.generator().eval()
    calls = []

    def predict(inputs):
        calls.append(inputs.frames.shape[0])
        return net_g(*inputs[:3]).pred

    preds, target = store.predictions(clips, [0, 0], [4, 5], predict)
    preds2, _ = store.predictions(clips, [0, 0], [4, 5], predict)
    with torch.no_grad():
        direct = net_g(*_one_by_one(w, clips, bg)[:3]).pred
    torch.testing.assert_close(preds, direct, rtol=1e-5, atol=1e-6)
    # One canonical group of targets (4..11 of the 12 frames), predicted once.
    assert torch.equal(preds, preds2) and torch.equal(target, clips[:, -1]) and calls == [8]


def test_feature_store_over_budget_still_answers_exactly():
    from mama.features.store import FeatureStore

    w = make_workload("light", size=64, batch=4, base=8, seed=8)
    items = w.batch_items
    store = FeatureStore(w.extractor, w.train_source, max_bytes=0)
    got = store.clip_inputs(items["clip"], items["video"], items["target"])
    want = _one_by_one(w, items["clip"], items["background"])
    for name, a, b in zip(got._fields, got, want):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=name)
    assert len(store) == 0 and store.bytes == 0


def test_feature_store_needs_one_coordinate_per_clip():
    from mama.features.store import FeatureStore

    w = make_workload("light", size=64, batch=2, base=8, seed=9)
    with pytest.raises(ValueError, match="one \\(video, target\\) per clip: 2 clips, 1 videos"):
        FeatureStore(w.extractor, w.train_source).clip_inputs(w.batch_items["clip"], [0], [4, 5])
