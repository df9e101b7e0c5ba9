"""Training: a few real steps of both stages, exact resume, clean stops, NaN handling, DDP."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mama.errors import MamaError
from mama.evaluate import validation
from mama.evaluate.fusion import FusionWeights
from mama.train import trainer as trainer_mod
from mama.models.checkpoint import read_file
from tests.support import tiny_train_config


def load_checkpoint(path: Path) -> dict:
    return read_file(path, "run")


def _weights(path: Path, key: str) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)[key]


def test_generator_run_writes_its_files(tiny_run):
    run = tiny_run["generator"].parent
    for name in ("final.pt", "best.pt", "latest.pt", "log.jsonl", "config_generator.json"):
        assert (run / name).is_file(), name
    assert any((run / "tensorboard").iterdir())
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert {"loss/g_total", "loss/sim_motion", "loss/sim_label", "train/psnr"} <= set(records[0])
    assert [r["step"] for r in records if "loss/g_total" in r] == [1, 4]
    val = [r for r in records if "val/pseudo_auc" in r]
    assert [r["step"] for r in val] == [2, 4]
    for r in val:  # every kind's AUC, and the figure is their mean
        kinds = [r[f"val/pseudo_auc_{k}"] for k in validation.PSEUDO_KINDS]
        assert all(0 <= a <= 1 for a in kinds) and r["val/pseudo_auc"] == pytest.approx(np.mean(kinds))
    payload = load_checkpoint(run / "final.pt")
    card = payload["card"]  # the model card: each stream's health, the fusion calibrated with it
    assert [s["name"] for s in card["streams"]] == ["sim_motion", "sim_label", "sse"]
    assert set(card["streams"][2]["per_kind"]) == set(validation.PSEUDO_KINDS)
    assert card["checkpoint"]["step"] == 4 and "final.pt is the last step (4)" in card["checkpoint"]["why"]
    used = FusionWeights.parse(card["fusion"]["weights"])
    assert used["sim_motion"] == used["sim_label"] == 0 and FusionWeights.from_dict(payload["calibration"]["weights"]) == used  # DIS + foreground
    assert payload["step"] == 4 and payload["stage"] == "generator"
    assert payload["model"]["labels"] == "foreground" and payload["model"]["label_channels"] == 4
    calib = payload["calibration"]
    assert set(calib["stats"]["mean"]) == {"sim_motion", "sim_label", "sse"}
    assert calib["threshold"] == calib["threshold"] and calib["background"].shape == (3, 32, 32)


def test_training_changes_the_weights(tiny_run, tiny_synth, tmp_path):
    fresh = trainer_mod.GeneratorTrainer(tiny_train_config(tiny_synth, tmp_path / "x"))
    trained = _weights(tiny_run["generator"], "net_g")
    floating = [k for k, v in fresh.net_g.state_dict().items() if v.dtype.is_floating_point]
    unchanged = [k for k in floating if torch.equal(fresh.net_g.state_dict()[k], trained[k])]
    # Every parameter and BatchNorm statistic moved (each gets a gradient; Adam moves it); the
    # integer batch counters are not compared.
    assert floating and unchanged == []


def test_destroyer_loss_gets_the_clean_prediction_the_damaged_one_and_the_target(tiny_run, tiny_synth, tmp_path,
                                                                               monkeypatch):
    # The reference: destroy_loss(A=clean prediction, N=damaged prediction (the destroyer's
    # input), GT=real target frame, G=destroyer output, BG=black background).
    seen = []
    real_loss = trainer_mod.ops.patch_destroy_loss

    def spy(A, N, GT, G, BG, patch, ld):
        seen.append({k: v.detach().clone() for k, v in dict(A=A, N=N, GT=GT, G=G, BG=BG).items()})
        return real_loss(A, N, GT, G, BG, patch, ld)

    monkeypatch.setattr(trainer_mod.ops, "patch_destroy_loss", spy)
    # 64x64 frames: the 8x8 grid of 8x8 patches, so the damage draws select some patches.
    gen = trainer_mod.train(tiny_train_config(tiny_synth, tmp_path / "g", iters=1, size=64, val_interval=100))
    t = trainer_mod.DestroyerTrainer(tiny_train_config(tiny_synth, tmp_path / "d", stage="destroyer", iters=4, size=64,
                                                       generator=str(gen / "final.pt"), val_interval=100))
    inputs, predictions = [], []
    real_damage = t.damage

    def damage(pred):
        predictions.append(pred.clone())
        out = real_damage(pred)
        inputs.append(out.clone())
        return out

    t.damage = damage
    t.run()
    assert len(seen) == 4
    damaged_somewhere = False
    for args, pred, damaged in zip(seen, predictions, inputs):
        torch.testing.assert_close(args["A"], pred, rtol=0, atol=0)
        torch.testing.assert_close(args["N"], damaged, rtol=0, atol=0)
        assert not args["A"].requires_grad and torch.equal(args["BG"], torch.full_like(pred, -1.0))
        assert args["GT"].shape == pred.shape and not torch.equal(args["GT"], pred)
        damaged_somewhere |= not torch.equal(args["A"], args["N"])
    assert damaged_somewhere  # A and N are different tensors, not the damaged one twice


@pytest.mark.parametrize("preset", ["paper", "fast"])
def test_batchnorm_after_the_first_validation(preset, tiny_synth, tmp_path, monkeypatch):
    # paper: the reference's validation leaves its networks in eval mode, so from the first
    # validation (after step 2 here) on, BatchNorm's running statistics stay frozen while its
    # affine parameters keep learning. fast: BatchNorm is trained normally throughout.
    seen = []
    real = trainer_mod.GeneratorTrainer.train_step

    def step(self, batch):
        out = real(self, batch)
        bn = self.net_g.inc_x.conv.conv[1]
        seen.append((self.net_g.training, bn.running_mean.clone(), bn.weight.detach().clone()))
        return out

    monkeypatch.setattr(trainer_mod.GeneratorTrainer, "train_step", step)
    trainer_mod.train(tiny_train_config(tiny_synth, tmp_path / preset, preset=preset, motion="dis",
                                        labels="foreground", iters=5, val_interval=2, save_interval=100))
    modes, means, weights = zip(*seen)
    for k in range(1, 5):
        assert not torch.equal(weights[k], weights[k - 1])  # the affine parameters always learn
    if preset == "paper":
        assert modes == (True, True, False, False, False)
        assert not torch.equal(means[1], means[0])
        assert all(torch.equal(means[k], means[1]) for k in (2, 3, 4))  # frozen from step 3 on
    else:
        assert modes == (True,) * 5
        assert all(not torch.equal(means[k], means[k - 1]) for k in range(1, 5))


def test_paper_preset_trains_on_every_video_in_batches_of_distinct_videos(tiny_synth, tmp_path, monkeypatch):
    batches = []
    real = trainer_mod.GeneratorTrainer.train_step

    def step(self, batch):
        batches.append([int(v) for v in batch["video"]])
        return real(self, batch)

    monkeypatch.setattr(trainer_mod.GeneratorTrainer, "train_step", step)
    cfg = tiny_train_config(tiny_synth, tmp_path / "p", preset="paper", motion="dis", labels="foreground",
                            iters=6, batch_size=3, val_interval=100)
    t = trainer_mod.GeneratorTrainer(cfg)
    t.run()
    assert [v.name for v in t.train_videos] == ["01", "02", "03"]  # nothing held out
    assert all(sorted(b) == [0, 1, 2] for b in batches)  # 3 videos, batches of 3: each video once
    fast = trainer_mod.GeneratorTrainer(tiny_train_config(tiny_synth, tmp_path / "f", preset="fast"))
    fast._data()
    assert [v.name for v in fast.train_videos] == ["01", "02"] and [v.name for v in fast.val_videos] == ["03"]


@pytest.mark.parametrize("stage", ["generator", "destroyer"])
def test_resume_gives_the_same_weights(stage, tiny_run, tiny_synth, tmp_path):
    kw = {"stage": stage}
    key = "net_g" if stage == "generator" else "net_a"
    if stage == "destroyer":
        kw["generator"] = str(tiny_run["generator"])
    straight = trainer_mod.train(tiny_train_config(tiny_synth, tmp_path / "straight", iters=4, **kw))
    trainer_mod.train(tiny_train_config(tiny_synth, tmp_path / "halves", iters=2, **kw))
    halves = trainer_mod.train(tiny_train_config(tiny_synth, tmp_path / "halves", iters=4, resume="latest", **kw))
    a, b = _weights(straight / "final.pt", key), _weights(halves / "final.pt", key)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=f"{stage} {k} differs after resume")


def test_resume_refuses_the_other_stage(tiny_run, tiny_synth, tmp_path):
    cfg = tiny_train_config(tiny_synth, tmp_path / "r", stage="destroyer", generator=str(tiny_run["generator"]),
                            resume=str(tiny_run["generator"]))
    with pytest.raises(MamaError, match="cannot resume the destroyer stage from .*final.pt: it is a generator"):
        trainer_mod.train(cfg)


def test_destroyer_needs_a_generator(tiny_synth, tmp_path):
    with pytest.raises(MamaError, match="needs --generator"):
        trainer_mod.train(tiny_train_config(tiny_synth, tmp_path / "d", stage="destroyer"))
    with pytest.raises(MamaError, match="does not exist"):
        trainer_mod.train(tiny_train_config(tiny_synth, tmp_path / "d", stage="destroyer",
                                            generator=str(tmp_path / "nope.pt")))


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tiny_synth, tmp_path, monkeypatch):
    real = trainer_mod.GeneratorTrainer.train_step

    def poisoned(self, batch):
        out = real(self, batch)
        if self.step == 2:  # the third step
            out["loss/g_total"] = float("nan")
        return out

    monkeypatch.setattr(trainer_mod.GeneratorTrainer, "train_step", poisoned)
    with pytest.raises(MamaError, match=r"loss/g_total became nan at step 3; .*latest.pt \(step 2\)"):
        trainer_mod.train(tiny_train_config(tiny_synth, tmp_path / "nan", save_interval=2))
    assert load_checkpoint(tmp_path / "nan" / "latest.pt")["step"] == 2
    assert not (tmp_path / "nan" / "final.pt").exists()


def test_sigterm_saves_and_exits_cleanly(tiny_synth, tmp_path, monkeypatch, capsys):
    real = trainer_mod.GeneratorTrainer.train_step

    def interrupted(self, batch):
        out = real(self, batch)
        if self.step == 0:
            signal.raise_signal(signal.SIGTERM)
        return out

    monkeypatch.setattr(trainer_mod.GeneratorTrainer, "train_step", interrupted)
    run = trainer_mod.train(tiny_train_config(tiny_synth, tmp_path / "stop", iters=10, save_interval=100))
    assert load_checkpoint(run / "latest.pt")["step"] == 1
    assert not (run / "final.pt").exists()
    assert "SIGTERM: saved" in capsys.readouterr().out


DDP_SCRIPT = r"""
import hashlib, os, sys, torch
sys.path.insert(0, {repo!r})
from tests.support import tiny_train_config
from mama.train.trainer import GeneratorTrainer
from pathlib import Path
t = GeneratorTrainer(tiny_train_config(Path({root!r}), Path({out!r}), iters=3, val_interval=100, save_interval=100))
grads = []
real = t.train_step
def step(batch):
    r = real(batch)
    g = torch.cat([p.grad.flatten() for p in t.net_g.parameters() if p.grad is not None])
    grads.append(g.clone())
    return r
t.train_step = step
t.run()
h = hashlib.sha256(torch.cat([p.detach().flatten() for p in t.net_g.parameters()]).numpy().tobytes()).hexdigest()
store = {{"computed": t.store.computed, "loaded": t.store.loaded, "dir": str(t.store.shards.dir),
          "chunks": len(list(t.store.shards.dir.rglob("*.safetensors")))}}
torch.save({{"grads": grads, "hash": h, "step": t.step, "store": store}}, Path({out!r}).parent / f"rank{{os.environ['RANK']}}.pt")
"""


def test_ddp_two_cpu_processes(tiny_synth, tmp_path):
    repo = str(Path(__file__).resolve().parents[2])
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT.format(repo=repo, root=str(tiny_synth), out=str(tmp_path / "run")))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MAMA_CACHE": str(tmp_path / "cache")}  # a store of its own
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517", str(script)],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{i}.pt", weights_only=True) for i in (0, 1))
    assert r0["step"] == r1["step"] == 3
    for g0, g1 in zip(r0["grads"], r1["grads"]):
        torch.testing.assert_close(g0, g1, rtol=1e-5, atol=1e-7)  # all-reduced: the same on both ranks
    assert r0["hash"] == r1["hash"]
    # The feature store on disk was computed cooperatively: each chunk by one rank, read by both.
    s0, s1 = r0["store"], r1["store"]
    # 2 training videos of 40 frames, chunks of 32: 4 chunks, dealt 2 and 2 (frames 0-31 of both to
    # one rank, 32-39 of both to the other): 80 frames' labels computed once between them.
    assert s0["dir"] == s1["dir"] and s0["chunks"] == s1["chunks"] == 4
    assert sorted([s0["computed"]["labels"], s1["computed"]["labels"]]) == [16, 64]
    assert s0["loaded"] > 0 and s1["loaded"] > 0
    # Only rank 0 writes the run's files.
    run = tmp_path / "run"
    assert (run / "final.pt").is_file() and (run / "log.jsonl").is_file()
    records = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss/g_total" in r] == [1, 3]  # one writer, not two


def test_the_destroyer_stage_inherits_the_generators_settings_and_refuses_others(tiny_run, tiny_synth, tmp_path):
    # Absent: taken from the generator's run. Given alike: fine. Given otherwise: an error.
    cfg = tiny_train_config(tiny_synth, tmp_path / "d", stage="destroyer", generator=str(tiny_run["generator"]),
                            preset=None, size=None, base=None, motion=None, labels=None)
    t = trainer_mod.DestroyerTrainer(cfg)
    gen_cfg = load_checkpoint(tiny_run["generator"])["config"]
    for name in ("preset", "motion", "labels", "size", "base"):
        assert getattr(t.cfg, name) == gen_cfg[name], name
    assert t.net_a.base == gen_cfg["base"]
    trainer_mod.DestroyerTrainer(tiny_train_config(tiny_synth, tmp_path / "d2", stage="destroyer",
                                                   generator=str(tiny_run["generator"]), motion="dis"))
    for flag, value, theirs in (("motion", "farneback", "dis"), ("size", 64, 32), ("preset", "paper", "fast"), ("base", 16, 8)):
        bad = tiny_train_config(tiny_synth, tmp_path / "d3", stage="destroyer", generator=str(tiny_run["generator"]),
                                **{flag: value})
        with pytest.raises(MamaError, match=rf"--{flag} {value} conflicts with the generator .*final\.pt, trained with "
                                            rf"--{flag} {theirs}; drop --{flag}"):
            trainer_mod.DestroyerTrainer(bad)
