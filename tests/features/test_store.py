"""The feature store on disk: an exact cache (training with it equals training without), shards
written atomically, and reused by a second run, the destroyer stage and a resume."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from mama.features.registry import build_extractor
from mama.features.store import FeatureStore, ShardDir, TensorSource
from mama.models.checkpoint import read_file
from mama.train import trainer as trainer_mod
from tests.support import tiny_train_config


def _cfg(root, out, **kw):
    base = dict(preset="paper", motion="dis", labels="foreground", holdout=0, iters=4, val_interval=100)
    return tiny_train_config(root, out, **{**base, **kw})


def _weights(run: Path, key: str = "net_g") -> dict:
    return read_file(run / "final.pt", "run")[key]


def test_training_with_the_store_on_disk_equals_training_without(tiny_synth, tmp_path, monkeypatch):
    runs = {}
    for store in ("off", "memory", "disk", "disk"):  # the second disk run reads every feature back
        monkeypatch.setenv("MAMA_CACHE", str(tmp_path / "cache"))
        out = tmp_path / f"{store}{len(runs)}"
        t = trainer_mod.GeneratorTrainer(_cfg(tiny_synth, out, feature_store=store))
        t.run()
        runs[out.name] = (t.store.computed["labels"], t.store.loaded, _weights(out))
    (_, _, off), (_, _, memory), (computed1, _, disk1), (computed2, loaded2, disk2) = runs.values()
    for other in (memory, disk1, disk2):
        assert all(torch.equal(off[k], other[k]) for k in off)
    assert computed1 > 0 and computed2 == 0 and loaded2 > 0  # the second run computed nothing


def test_the_destroyer_stage_and_a_resume_read_the_generator_stages_features(tiny_synth, tmp_path, monkeypatch):
    monkeypatch.setenv("MAMA_CACHE", str(tmp_path / "cache"))
    gen = trainer_mod.GeneratorTrainer(_cfg(tiny_synth, tmp_path / "g"))
    gen.run()
    assert gen.store.computed["labels"] > 0
    des = trainer_mod.DestroyerTrainer(_cfg(tiny_synth, tmp_path / "d", stage="destroyer", generator=str(tmp_path / "g" / "final.pt")))
    des.run()
    assert des.store.shards.dir == gen.store.shards.dir
    assert des.store.computed["labels"] == des.store.computed["flows"] == 0 and des.store.loaded > 0
    resumed = trainer_mod.GeneratorTrainer(_cfg(tiny_synth, tmp_path / "g", iters=6, resume="latest"))
    resumed.run()
    assert resumed.store.computed["labels"] == 0 and resumed.store.loaded > 0


def test_shards_are_written_whole_or_not_at_all(tmp_path, monkeypatch):
    video = torch.rand(20, 3, 16, 16) * 2 - 1
    extractor = build_extractor("dis", "foreground")

    class Named(TensorSource):
        def video_key(self, v):
            return f"cam{v}"

    source = Named({0: video}, {0: video.median(dim=0).values})
    shards = ShardDir(tmp_path, {"test": 1})
    # A write that dies half-way (a full disk, a kill) leaves no shard under the final name.
    import mama.features.store as store_mod

    real = store_mod.save_file

    def dies(tensors, path, metadata=None):
        Path(path).write_bytes(b"half")
        raise OSError("killed")

    monkeypatch.setattr(store_mod, "save_file", dies)
    with pytest.raises(OSError):
        FeatureStore(extractor, source, shards=shards).fill_video(0)
    assert not list(shards.dir.rglob("*.safetensors")) and not list(shards.dir.rglob("*.tmp*"))
    monkeypatch.setattr(store_mod, "save_file", real)
    first = FeatureStore(extractor, source, shards=shards)
    first.fill_video(0)
    # A shard damaged on disk is computed again and rewritten, with the same bits.
    path = shards.path("cam0", 0)
    path.write_bytes(path.read_bytes()[:40])
    again = FeatureStore(extractor, source, shards=shards)
    again.fill_video(0)
    assert again.computed["labels"] == 20 and again.loaded == 0
    third = FeatureStore(extractor, source, shards=shards)
    third.fill_video(0)
    assert third.loaded == 1 and third.computed["labels"] == 0
    assert all(torch.equal(first.labels[k], third.labels[k]) for k in first.labels)
    assert (shards.dir / "identity.json").is_file()
    # A whole, valid shard under another's name (another video's, another chunk's) is not taken for it.
    other = shards.path("cam1", 3)
    other.parent.mkdir(parents=True)
    shutil.copyfile(path, other)
    assert shards.load("cam0", 0) is not None and shards.load("cam1", 3) is None and shards.load("cam0", 1) is None
    # ... nor one that holds fewer entries than the chunk has.
    assert shards.load("cam0", 0, {"labels": 21}) is None and shards.load("cam0", 0, {"labels": 20}) is not None


def test_evaluation_reads_the_test_videos_features_back(tiny_run, tmp_path, monkeypatch):
    import json

    import mama.features.store as store_mod
    from mama.cli.app import main

    monkeypatch.setenv("MAMA_CACHE", str(tmp_path / "cache"))
    computed = []
    real = store_mod.FeatureStore._compute

    def counted(self, *args):
        computed.append(args)
        return real(self, *args)

    monkeypatch.setattr(store_mod.FeatureStore, "_compute", counted)
    results = []
    for run, store in (("first", "disk"), ("second", "disk"), ("off", "off")):
        before = len(computed)
        rc = main(["eval", "--checkpoint", str(tiny_run["destroyer"]), "--dataset", "synth", "--data-root",
                   str(tiny_run["root"]), "--out", str(tmp_path / run), "--device", "cpu", "--feature-store", store])
        assert rc == 0
        results.append((len(computed) - before, json.loads((tmp_path / run / "metrics.json").read_text())["rows"]))
    (first, rows1), (second, rows2), (off, rows_off) = results
    # The second evaluation computed no feature; within the first, the localisation pass read
    # what scoring the test videos had written (without the store it computes them again).
    assert first > 0 and second == 0 and off > first
    strip = lambda rows: [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]  # noqa: E731
    assert strip(rows1) == strip(rows2) == strip(rows_off)
    dirs = [json.loads(p.read_text()) for p in (tmp_path / "cache" / "features").glob("*/identity.json")]
    assert any(d.get("use") == "scoring" for d in dirs)


def test_a_store_over_its_memory_budget_still_gives_every_entry_exactly(tmp_path):
    """Beside a disk store memory keeps the most recently used entries; computing what a batch
    misses may evict entries the same batch needs (it did: a KeyError in the destroyer stage on
    Ped2). A budget of about one chunk: a batch needing a kept chunk and a missing one still
    gets the unbounded store's bits."""
    g = torch.Generator().manual_seed(4)
    videos = {v: torch.rand(40, 3, 16, 16, generator=g) * 2 - 1 for v in range(3)}
    extractor = build_extractor("dis", "foreground")

    class Named(TensorSource):
        def video_key(self, v):
            return f"cam{v}"

    def source():
        return Named(dict(videos), {v: f.median(dim=0).values for v, f in videos.items()})

    def predict(inputs):
        return inputs[0][:, -3:] * 0.5 + inputs[1].mean()  # any fixed function of the clip inputs

    full = FeatureStore(extractor, source())
    chunk_bytes = (31 * 2 + 32) * 16 * 16 * 4  # one 32-frame chunk's flows and labels at 16x16
    tiny = FeatureStore(extractor, source(), max_bytes=chunk_bytes + 4096, shards=ShardDir(tmp_path, {"test": 2}))
    # Kept, then kept + missing (whose computing evicts the kept); the same for predictions.
    batches = [[(0, 31)], [(0, 31), (1, 10)], [(2, 20)], [(2, 20), (0, 36)], [(1, 12), (2, 33), (0, 5), (1, 39)]]
    for batch in batches:
        vids, targets = torch.tensor([v for v, _ in batch]), torch.tensor([t for _, t in batch])
        clips = torch.stack([videos[v][t - 4 : t + 1] for v, t in batch])
        want, got = full.clip_inputs(clips, vids, targets), tiny.clip_inputs(clips, vids, targets)
        for a, b in zip(want, got):
            assert (a is None and b is None) or torch.equal(a, b)
        want_p, _ = full.predictions(clips, vids, targets, predict)
        got_p, _ = tiny.predictions(clips, vids, targets, predict)
        assert torch.equal(want_p, got_p)
    assert tiny.bytes <= tiny.max_bytes
