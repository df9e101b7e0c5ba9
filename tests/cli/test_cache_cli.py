"""`mama cache`: what the cache holds (sizes, last use, in use), clearing by kind, by age and all,
and an entry a running process holds is never removed (mama.cache)."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
import torch

from mama import cache
from mama.cli.app import main
from mama.data.datasets import ClipDataset, make_folder_samples, open_prepared, prepared_path
from mama.features.store import ShardDir
from tests.data.fixtures import write_video_file

IDENTITY = {"format": 1, "motion": "dis", "labels": "foreground", "size": 16, "chunk": 4}
DAY = 86400


@pytest.fixture
def filled(tmp_path, monkeypatch):
    """A cache of this test's own: two prepared videos (frames) and one video's features in a store."""
    root = tmp_path / "cache"
    monkeypatch.setenv("MAMA_CACHE", str(root))
    monkeypatch.setenv("MAMA_WEIGHTS", str(tmp_path / "weights"))
    monkeypatch.setenv("COLUMNS", "80")
    rng = np.random.default_rng(0)
    videos = []
    for name, count in (("cam1", 9), ("cam2", 7)):
        write_video_file(tmp_path / "videos" / f"{name}.mp4", count, rng)
    for video in make_folder_samples(tmp_path / "videos"):
        open_prepared(video, (16, 16)).close()
        videos.append(video)
    shards = ShardDir(root / "features", IDENTITY)
    for k in range(3):
        shards.save("synth/training/01-0123456789ab", k, {"flows": torch.zeros(4, 2, 4, 4), "labels": torch.ones(4, 1, 2, 2)})
    shards.close()
    return {"root": root, "videos": videos, "store": shards.dir}


def test_list_shows_each_entry_with_its_size_and_the_totals(filled, capsys):
    found = cache.entries(filled["root"])
    assert [(e.kind, e.video) for e in found] == [("frames", "cam1"), ("frames", "cam2"),
                                                    ("features", "synth/training/01")]
    frames = {e.video: e for e in found if e.kind == "frames"}
    for video in filled["videos"]:
        path = prepared_path(video, (16, 16))
        assert frames[video.name].bytes == path.stat().st_size == 128 + video.num_frames * 16 * 16 * 3
        assert frames[video.name].detail == "16x16" and not frames[video.name].in_use
    shards = sorted((filled["store"] / "synth" / "training" / "01-0123456789ab").iterdir())
    assert [p.name for p in shards] == ["chunk000000.safetensors", "chunk000001.safetensors", "chunk000002.safetensors"]
    assert found[2].bytes == sum(p.stat().st_size for p in shards)
    assert found[2].detail == "dis+foreground 16px training"
    assert all(time.time() - e.last_use < 60 for e in found)

    assert main(["cache"]) == 0
    out = capsys.readouterr().out
    assert "synth/training/01" in out and "dis+foreground" in out and "cam1" in out
    assert f"frames: 2 entries, {(found[0].bytes + found[1].bytes) / 1000:.1f} KB" in out
    assert "features: 1 entry," in out and "weights: 0 B" in out
    assert max(len(line) for line in out.splitlines()) <= 80


def test_clear_by_kind_removes_only_that_kind(filled, capsys):
    frames_bytes = sum(e.bytes for e in cache.entries(filled["root"]) if e.kind == "frames")
    assert main(["cache", "clear", "--kind", "frames"]) == 0
    assert f"removed 2 entries, {frames_bytes / 1000:.1f} KB" in capsys.readouterr().out
    assert [e.kind for e in cache.entries(filled["root"])] == ["features"]
    assert sorted(p.name for p in (filled["root"] / "frames").iterdir()) == []  # the lock files too
    assert main(["cache", "clear", "--kind", "features"]) == 0
    assert cache.entries(filled["root"]) == []
    assert not filled["store"].exists()  # the emptied store with its identity.json


def test_clear_by_age_keeps_what_was_used_recently(filled):
    old = time.time() - 10 * DAY
    cam1 = prepared_path(filled["videos"][0], (16, 16))
    for path in (cam1, cache.lock_path(cam1)):
        os.utime(path, (old, old))
    assert main(["cache", "clear", "--older-than", "7d", "--dry-run"]) == 0
    assert cam1.is_file()
    assert main(["cache", "clear", "--older-than", "7d"]) == 0
    assert not cam1.exists()
    assert [e.video for e in cache.entries(filled["root"])] == ["cam2", "synth/training/01"]
    # Reading an entry is using it: its last use becomes now.
    cam2 = prepared_path(filled["videos"][1], (16, 16))
    for path in (cam2, cache.lock_path(cam2)):
        os.utime(path, (old, old))
    open_prepared(filled["videos"][1], (16, 16)).close()
    assert main(["cache", "clear", "--older-than", "7d"]) == 0
    assert cam2.is_file()


def test_an_entry_a_running_process_holds_is_kept(filled, capsys):
    """A second process trains from the prepared cam1 (ClipDataset holds its frames) and writes
    features (ShardDir holds its video): `clear --all` keeps both, removes the rest, and removes
    them once the process has ended."""
    script = textwrap.dedent(f"""
        import sys, time
        from mama.data.datasets import ClipDataset, make_folder_samples
        from mama.features.store import ShardDir
        import torch
        cam1 = [v for v in make_folder_samples({str(filled['videos'][0].source)!r})]
        ds = ClipDataset(cam1, size=(16, 16))
        ds.frames(0, [0])
        shards = ShardDir({str(filled['root'] / 'features')!r}, {IDENTITY!r})
        shards.save("synth/training/02-0123456789ab", 0, {{"flows": torch.zeros(1)}})
        print("holding", flush=True)
        time.sleep(120)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "holding"
        state = {e.video: e.in_use for e in cache.entries(filled["root"])}
        assert state == {"cam1": True, "cam2": False, "synth/training/01": False, "synth/training/02": True}
        assert main(["cache"]) == 0
        assert capsys.readouterr().out.count("in use") == 2
        assert main(["cache", "clear", "--all"]) == 0
        out = capsys.readouterr().out
        assert "removed 2 entries" in out
        assert "kept frames cam1" in out and "kept features synth/training/02" in out
        assert prepared_path(filled["videos"][0], (16, 16)).is_file()
        assert (filled["store"] / "identity.json").is_file()
        assert [e.video for e in cache.entries(filled["root"])] == ["cam1", "synth/training/02"]
    finally:
        proc.kill()
        proc.wait()
    assert main(["cache", "clear", "--all"]) == 0
    assert "removed 2 entries" in capsys.readouterr().out and cache.entries(filled["root"]) == []


def test_a_reader_waits_for_a_clear_and_then_holds_the_new_lock(tmp_path):
    """A process starting to use an entry while it is being cleared waits, then holds a lock file
    that a later clear sees (not the one the first clear removed)."""
    entry = tmp_path / "frames" / "v-0123456789ab-16x16.npy"
    entry.parent.mkdir()
    entry.write_bytes(b"x")
    fd = cache._claim(entry)
    assert fd is not None
    got = []
    reader = threading.Thread(target=lambda: got.append(cache.hold(entry)))
    reader.start()
    time.sleep(0.3)
    assert not got  # waiting for the clear
    entry.unlink()
    cache.lock_path(entry).unlink()
    os.close(fd)
    reader.join(5)
    assert got and cache.lock_path(entry).is_file()
    assert cache._claim(entry) is None  # the new lock file is the one held
    got[0].close()
    fd = cache._claim(entry)
    assert fd is not None
    os.close(fd)


def test_an_open_dataset_holds_its_prepared_frames(filled):
    dataset = ClipDataset(filled["videos"][:1], size=(16, 16))
    dataset.frames(0, [0, 1])
    assert [e.in_use for e in cache.entries(filled["root"])] == [True, False, False]
    reader = dataset._prepared[0]
    reader.close()
    assert not any(e.in_use for e in cache.entries(filled["root"]))


def test_a_killed_writers_temporary_is_listed_and_cleared(filled):
    temp = filled["root"] / "frames" / ".cam9-0123456789ab-16x16.npy.abc123xy.tmp.npy"
    temp.write_bytes(b"\0" * 500)
    partial = [e for e in cache.entries(filled["root"]) if e.video == "cam9"]
    assert len(partial) == 1 and not partial[0].complete and partial[0].bytes == 500
    assert main(["cache", "clear", "--kind", "frames"]) == 0
    assert not temp.exists()


@pytest.mark.parametrize("argv, flag", [
    (["cache", "clear"], "--all"),
    (["cache", "clear", "--older-than", "7days"], "--older-than"),
    (["cache", "clear", "--kind", "predictions"], "--kind"),
    (["cache", "clear", "--all", "--kind", "frames"], "--all"),
])
def test_a_bad_clear_says_which_flag_in_one_line(filled, capsys, argv, flag):
    before = [(e.kind, e.video, e.bytes) for e in cache.entries(filled["root"])]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and flag in err and err.count("\n") == 1 and "Traceback" not in err
    assert [(e.kind, e.video, e.bytes) for e in cache.entries(filled["root"])] == before
