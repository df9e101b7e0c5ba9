"""The GPU fast paths, each checked on the CPU against the path it replaces: training frames
resident on the device, features filled up front, fused AdamW, losses read back every N steps,
compiled training steps and a compiled scorer."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mama.data.datasets import ClipDataset, make_samples
from mama.data.resident import ResidentFrames, resident_bytes, to_model_range
from mama.models.checkpoint import read_file
from mama.train import trainer as trainer_mod
from tests.support import tiny_train_config


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    """Two training videos, one of frame files and one mp4 (the prepared-frames path)."""
    from tests.data.fixtures import cell_gt, write_mat_dataset

    import shutil

    import cv2

    root = tmp_path_factory.mktemp("fast")
    write_mat_dataset(root, "synth", [8], cell_gt([[(5, 8)]]), train_frames=(14, 12), seed=3)
    folder = root / "synth" / "training" / "frames" / "02"
    images = [cv2.imread(str(f)) for f in sorted(folder.iterdir())]
    writer = cv2.VideoWriter(str(folder.with_suffix(".mp4")), cv2.VideoWriter_fourcc(*"mp4v"), 10,
                             images[0].shape[1::-1])
    for image in images:
        writer.write(image)
    writer.release()
    shutil.rmtree(folder)
    return root


def _cfg(root, out, **kw):
    kw = {"save_interval": 3, "val_interval": 3, **kw}
    return tiny_train_config(root, out, preset="paper", motion="dis", labels="foreground", holdout=0, **kw)


def _weights(path: Path, key: str) -> dict[str, torch.Tensor]:
    return read_file(path, "run")[key]


def test_resident_batches_are_the_loaders_bits(videos):
    dataset = ClipDataset(make_samples("synth", videos, "training"), size=(32, 32))
    resident = ResidentFrames(dataset, "cpu")
    assert resident.nbytes == resident_bytes(dataset) == sum(v.num_frames for v in dataset.videos) * 32 * 32 * 3
    rng = np.random.default_rng(0)
    indices = [int(i) for i in rng.integers(0, len(dataset), size=6)]
    got = resident.batch(indices)
    want = torch.utils.data.default_collate([dataset[i] for i in indices])
    assert set(got) == set(want)
    for key in want:
        assert got[key].dtype == want[key].dtype and torch.equal(got[key], want[key]), key


def test_device_conversion_matches_the_readers():
    from mama.data.datasets import uint8_to_model_range

    frames = np.random.default_rng(1).integers(0, 256, size=(3, 9, 7, 3), dtype=np.uint8)
    want = torch.from_numpy(np.ascontiguousarray(uint8_to_model_range(frames)))
    got = to_model_range(torch.from_numpy(frames).permute(0, 3, 1, 2))
    assert torch.equal(got, want)
    assert got.min() >= -1.0 and got.max() <= 1.0


@pytest.mark.parametrize("store", ["memory", "disk"])
def test_resident_training_equals_loader_training(videos, tmp_path, monkeypatch, store):
    monkeypatch.setenv("MAMA_CACHE", str(tmp_path / "cache"))
    gen_a = trainer_mod.train(_cfg(videos, tmp_path / "ga", iters=5, resident=False, feature_store=store))
    gen_b = trainer_mod.train(_cfg(videos, tmp_path / "gb", iters=5, resident=True, feature_store=store))
    for key in ("net_g", "net_d"):
        a, b = _weights(gen_a / "final.pt", key), _weights(gen_b / "final.pt", key)
        for name in a:
            assert torch.equal(a[name], b[name]), f"{key}.{name}"
    des_a = trainer_mod.train(_cfg(videos, tmp_path / "da", stage="destroyer", iters=4, resident=False,
                                   feature_store=store, generator=str(gen_a / "final.pt")))
    des_b = trainer_mod.train(_cfg(videos, tmp_path / "db", stage="destroyer", iters=4, resident=True,
                                   feature_store=store, generator=str(gen_a / "final.pt")))
    a, b = _weights(des_a / "final.pt", "net_a"), _weights(des_b / "final.pt", "net_a")
    for name in a:
        assert torch.equal(a[name], b[name]), f"net_a.{name}"


def test_resident_run_fills_the_features_up_front(videos, tmp_path, monkeypatch):
    seen = {}
    real = trainer_mod.Trainer._run

    def spy(self):
        seen["before_first_step"] = dict(self.store.computed)
        seen["frames"] = sum(v.num_frames for v in self.train_videos)
        return real(self)

    monkeypatch.setattr(trainer_mod.Trainer, "_run", spy)
    trainer_mod.train(_cfg(videos, tmp_path / "g", iters=2, resident=True, feature_store="memory"))
    # Every frame's labels and every pair's flow, before the first step.
    assert seen["before_first_step"]["labels"] == seen["frames"]
    assert seen["before_first_step"]["flows"] == seen["frames"] - 2  # one pair fewer per video


def test_fused_adamw_matches_foreach():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 2, 1))
    twin = copy.deepcopy(net)
    opts = [trainer_mod.adamw(net, 1e-3, 1e-4, fused=True), trainer_mod.adamw(twin, 1e-3, 1e-4, fused=False)]
    assert opts[0].defaults["fused"] and not opts[1].defaults.get("fused")
    for _ in range(5):
        x = torch.randn(4, 3, 12, 12)
        for m, opt in zip((net, twin), opts):
            opt.zero_grad()
            m(x).square().mean().backward()
            opt.step()
    for (name, a), b in zip(net.named_parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6, msg=name)


def test_a_step_reads_nothing_back(videos, tmp_path, monkeypatch):
    """A training step leaves its losses on the device: mama's code calls no .item() / float() /
    .tolist() of a tensor inside it (torch's CPU optimiser reads its step counters, host tensors)."""
    import sys

    reads = []
    for name in ("item", "tolist", "__float__"):
        real = getattr(torch.Tensor, name)

        def spy(self, *a, _real=real, _name=name):
            caller = sys._getframe(1).f_code.co_filename
            if "/mama/" in caller or "/cli/" in caller:
                reads.append((_name, caller, sys._getframe(1).f_lineno))
            return _real(self, *a)

        monkeypatch.setattr(torch.Tensor, name, spy)
    trainer = trainer_mod.GeneratorTrainer(_cfg(videos, tmp_path / "g", iters=2, resident=True))
    trainer._data()
    trainer.wrap_networks()
    reads.clear()
    scalars = trainer.train_step(next(trainer.batches()))
    assert reads == []
    assert all(torch.is_tensor(v) and v.dim() == 0 for k, v in scalars.items() if k.startswith("loss/"))
    floats = trainer_mod.as_floats(scalars)
    assert all(isinstance(v, float) and np.isfinite(v) for v in floats.values())


def test_losses_are_read_back_every_n_steps_and_logged_as_before(videos, tmp_path, monkeypatch):
    batches = []
    real = trainer_mod.Trainer._read_back
    monkeypatch.setattr(trainer_mod.Trainer, "_read_back", lambda self, pending: batches.append([s for s, _ in pending])
                        or real(self, pending))
    out = trainer_mod.train(_cfg(videos, tmp_path / "g", iters=12, resident=True, save_interval=100, val_interval=100))
    # Read back at step 1, every READBACK_EVERY steps and at the end; every step's figures checked once.
    assert trainer_mod.READBACK_EVERY == 10
    assert batches == [[1], list(range(2, 11)), [11, 12]]
    logged = [r["step"] for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if "loss/g_total" in r]
    assert logged == [1, 10, 12]


def test_a_nan_between_read_backs_names_its_own_step(videos, tmp_path, monkeypatch):
    real = trainer_mod.GeneratorTrainer.train_step

    def poisoned(self, batch):
        out = real(self, batch)
        if self.step == 4:  # the fifth step; read back only at step 10
            out["loss/d"] = out["loss/d"] * float("inf")
        return out

    monkeypatch.setattr(trainer_mod.GeneratorTrainer, "train_step", poisoned)
    with pytest.raises(trainer_mod.MamaError, match=r"loss/d became inf at step 5; .*latest.pt \(step 3\)"):
        trainer_mod.train(_cfg(videos, tmp_path / "nan", iters=12, val_interval=100))
    assert read_file(tmp_path / "nan" / "latest.pt", "run")["step"] == 3


@pytest.mark.parametrize("stage", ["generator", "destroyer"])
def test_compiled_training_steps_match_eager(videos, tmp_path, monkeypatch, stage):
    """torch.compile on the trained networks (aot_eager: the CPU-traceable path of the CUDA
    one) gives the eager run's weights within 1e-4 after 4 steps."""
    generator = None
    if stage == "destroyer":
        generator = str(trainer_mod.train(_cfg(videos, tmp_path / "g0", iters=2)) / "final.pt")
    kw = dict(stage=stage, iters=4, generator=generator, val_interval=100, save_interval=100)
    eager = trainer_mod.train(_cfg(videos, tmp_path / "eager", compile=False, **kw))
    monkeypatch.setattr(trainer_mod.Trainer, "compile_devices", ("cpu",))
    monkeypatch.setattr(trainer_mod.Trainer, "compile_backend", "aot_eager")
    compiled_calls = []
    real = trainer_mod.compile_model
    monkeypatch.setattr(trainer_mod, "compile_model", lambda m, *a, **k: compiled_calls.append(type(m).__name__)
                        or real(m, *a, **k))
    compiled = trainer_mod.train(_cfg(videos, tmp_path / "compiled", compile=True, **kw))
    # The trained networks are compiled; the destroyer stage's frozen generator is not (it runs
    # once per clip, and its stored predictions must not live in CUDA graphs' memory).
    assert compiled_calls == (["F2LMGenerator", "PatchDiscriminator"] if stage == "generator" else ["Destroyer"])
    key = "net_g" if stage == "generator" else "net_a"
    a, b = _weights(eager / "final.pt", key), _weights(compiled / "final.pt", key)
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-4, atol=1e-4, msg=f"{key}.{name}")


def test_compiled_scorer_gives_the_eager_streams(tiny_run):
    from mama.evaluate.engine import Scorer
    from mama.features.registry import build_extractor
    from mama.models.build import models_from_run

    payload = read_file(tiny_run["destroyer"], "run")
    net_g, net_a, meta = models_from_run(payload, tiny_run["destroyer"], need_destroyer=True)
    extractor = build_extractor(meta["motion"], meta["labels"], torch.device("cpu"))
    video = make_samples("synth", tiny_run["root"], "testing")[0]
    dataset = ClipDataset([video], size=(meta["size"], meta["size"]))
    frames = dataset.frames(0, range(video.num_frames))
    bg = dataset.background(0)
    eager = Scorer(copy.deepcopy(net_g).eval(), extractor, copy.deepcopy(net_a).eval(), batch_size=16)
    compiled = Scorer(copy.deepcopy(net_g).eval(), extractor, copy.deepcopy(net_a).eval(), batch_size=16, compile=True)
    want, got = eager.video_streams(frames, bg), compiled.video_streams(frames, bg)
    assert set(got) == set(want) == {"sim_motion", "sim_label", "sse", "destroyer_sse"}
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=1e-5, err_msg=k)
