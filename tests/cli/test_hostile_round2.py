"""Hostile input, second round (issue 23): readers of files a user or the cache can damage, flags
with a range, flags that conflict, and caches that must heal. As in test_hostile.py, every bad
input goes through the real CLI (`mama.cli.app.main`) and must end with exit code 2, one
`error:` line naming the file or flag (and the fix), no traceback, nothing created or changed.

The caches' faults (a shard of another chunk, prepared frames cut short, a cache that cannot be
written, a full disk, temporaries a killed writer left) have their own tests at the end: each
says what it must, and the next run recovers by itself.
"""
from __future__ import annotations

import errno
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from mama.cli.app import main
from tests.cli.test_hostile import TINY, assert_one_error_line
from tests.data.fixtures import cell_gt, write_frames, write_mat_dataset, write_video_file

REPO = Path(__file__).resolve().parents[2]


def _checkpoint_with(src: Path, dst: Path, edit) -> Path:
    payload = torch.load(src, weights_only=True)
    edit(payload)
    torch.save(payload, dst)
    return dst


@pytest.fixture(scope="module")
def world(tiny_run, tmp_path_factory) -> dict[str, Path]:
    w = tmp_path_factory.mktemp("world2")
    p = {"root": tiny_run["root"], "gen": tiny_run["generator"], "des": tiny_run["destroyer"]}
    (w / "afile").write_text("a file, not a folder")
    rng = np.random.default_rng(1)
    # The tiny synthetic set again, its first test video's pixel masks damaged two ways.
    for name, damage in (("pickled_mask", "pickled"), ("empty_mask", "empty")):
        shutil.copytree(tiny_run["root"], w / name)
        mask = w / name / "synth" / "testing" / "pixel_masks" / "01.npy"
        assert mask.is_file()
        if damage == "pickled":
            np.save(mask, np.array([{"frame": i} for i in range(40)], dtype=object), allow_pickle=True)
        else:
            mask.write_bytes(b"")
    # A test video (and, apart, a training video) holding one frame of another size.
    for name, split in (("odd_test", "testing"), ("odd_train", "training")):
        write_mat_dataset(w / name, "ped2", [12], cell_gt([[(7, 9)]]), train_frames=(12, 12))
        frame = w / name / "ped2" / split / "frames" / "01" / "8.jpg"
        cv2.imwrite(str(frame), (rng.random((20, 30, 3)) * 255).astype(np.uint8))
    write_mat_dataset(w / "cut_test", "ped2", [12], cell_gt([[(7, 9)]]), train_frames=(12, 12))
    cut = w / "cut_test" / "ped2" / "testing" / "frames" / "01" / "11.jpg"  # the last frame, cut short
    cut.write_bytes(cut.read_bytes()[:100])
    os.mkfifo(w / "pipe.mp4")
    write_frames(w / "notimage", 8, rng)
    (w / "notimage" / "8.png").write_text("the last file is not an image")
    write_frames(w / "labelled" / "cam1", 8, rng)
    (w / "labelled" / "cam1.npy").write_bytes(b"")
    for name, frames in (("videos", 16), ("short_videos", 12)):
        (w / name).mkdir()
        for i in (1, 2):
            write_video_file(w / name / f"cam{i}.mp4", frames, rng)
    (w / "empty.pt").write_bytes(b"")
    gen_payload = torch.load(tiny_run["generator"], weights_only=True)
    torch.save(gen_payload["net_g"], w / "bare_generator.pt")

    def calib(key, value):
        return lambda payload: payload["calibration"].__setitem__(key, value)

    _checkpoint_with(p["des"], w / "nan_threshold.pt", calib("threshold", float("nan")))
    _checkpoint_with(p["des"], w / "negative_sigma.pt", calib("sigma", -5.0))
    _checkpoint_with(p["des"], w / "zero_std.pt", lambda c: c["calibration"]["stats"]["std"].__setitem__("sse", 0.0))
    _checkpoint_with(p["des"], w / "small_background.pt", calib("background", torch.zeros(3, 8, 8)))
    _checkpoint_with(p["des"], w / "huge_size.pt", lambda c: c["model"].__setitem__("size", 100000))
    _checkpoint_with(p["des"], w / "unknown_motion.pt", lambda c: c["model"].__setitem__("motion", "raft"))
    p.update({k: w / k for k in ("afile", "pickled_mask", "empty_mask", "odd_test", "odd_train", "cut_test", "pipe.mp4", "labelled", "notimage", "videos", "short_videos", "empty.pt",
                                 "bare_generator.pt", "nan_threshold.pt", "negative_sigma.pt", "zero_std.pt",
                                 "huge_size.pt", "unknown_motion.pt", "small_background.pt")})
    return p


def _damaged_run(p, w, edit) -> Path:
    """A copy of the generator's run folder whose latest.pt `edit` damaged."""
    run = w / "run"
    shutil.copytree(p["gen"].parent, run)
    _checkpoint_with(run / "latest.pt", run / "latest.pt", edit)
    return run


def _resume(p, w, edit):
    return ["train", *TINY, "--data-root", str(p["root"]), "--out", str(_damaged_run(p, w, edit)), "--resume", "latest",
            "--iters", "8"]


def _eval(p, *extra, ck="des", dataset="synth", root="root"):
    return ["eval", "--checkpoint", str(p[ck]), "--dataset", dataset, "--data-root", str(p[root]), "--device", "cpu",
            "--batch-size", "8", *extra]


# (id, argv(world, workspace), the one error line must match this)
CASES = [
    # -- 1. exceptions that escaped the one-line handler
    ("eval-pickled-pixel-mask", lambda p, w: _eval(p, "--out", str(w / "e"), root="pickled_mask"),
     r"pixel_masks/01\.npy: cannot read these pixel masks \(.*\); re-create it .* or remove the pixel_masks folder"),
    ("eval-empty-pixel-mask", lambda p, w: _eval(p, "--out", str(w / "e"), root="empty_mask"),
     r"pixel_masks/01\.npy: cannot read these pixel masks \(an empty file\)"),
    ("eval-sigma-inf", lambda p, w: _eval(p, "--sigma", "inf"), r"--sigma inf must be a finite number >= 0 .*e\.g\. --sigma 10"),
    ("eval-batch-0", lambda p, w: _eval(p, "--batch-size", "0"), r"--batch-size 0 must be a positive whole number"),
    ("train-seed-negative", lambda p, w: ["train", *TINY, "--data-root", str(p["root"]), "--seed", "-1", "--out", str(w / "r")],
     r"--seed -1 must be a whole number from 0 to 4294967295"),
    ("train-seed-huge", lambda p, w: ["train", *TINY, "--data-root", str(p["root"]), "--seed", str(2**40), "--out", str(w / "r")],
     r"--seed 1099511627776 must be a whole number from 0"),
    ("train-size-100000", lambda p, w: ["train", *TINY, "--data-root", str(p["root"]), "--size", "100000", "--out", str(w / "r")],
     r"--size 100000 is above 2048 .*; e\.g\. --size 256"),
    ("train-base-huge", lambda p, w: ["train", *TINY, "--data-root", str(p["root"]), "--base", "4096", "--out", str(w / "r")],
     r"--base 4096 must be a whole number from 1 to 512"),
    ("eval-checkpoint-size-100000", lambda p, w: _eval(p, "--out", str(w / "e"), ck="huge_size.pt"),
     r"huge_size\.pt: its recorded size 100000 is above 2048 .*use a final\.pt / best\.pt written by `mama train`"),
    ("eval-checkpoint-unknown-motion", lambda p, w: _eval(p, "--out", str(w / "e"), ck="unknown_motion.pt"),
     r"unknown motion provider 'raft'"),
    ("destroyer-on-generator-of-size-100000", lambda p, w: ["train", *TINY, "--data-root", str(p["root"]), "--stage", "destroyer",
                                                            "--generator", str(p["huge_size.pt"]), "--out", str(w / "r")],
     r"huge_size\.pt: its recorded size 100000 is above 2048"),
    ("train-folder-select-on-test", lambda p, w: ["train", *TINY, "--dataset", "folder", "--data-root", str(p["videos"]),
                                                  "--select-on-test", "--out", str(w / "r")],
     r"--select-on-test validates on test labels, but a folder dataset has no test split; drop --select-on-test"),
    ("train-out-under-a-file", lambda p, w: ["train", *TINY, "--data-root", str(p["root"]), "--out", str(p["afile"] / "run")],
     r"--out .*afile/run: .*afile is a file, so no folder can be made under it"),
    ("eval-out-under-a-file", lambda p, w: _eval(p, "--out", str(p["afile"] / "e")), r"--out .*afile/e: .*afile is a file"),
    ("synth-out-under-a-file", lambda p, w: ["data", "synth", "--out", str(p["afile"] / "s")], r"--out .*afile/s: .*afile is a file"),
    ("prepare-size-100000", lambda p, w: ["data", "prepare", "--dataset", "folder", "--data-root", str(p["videos"]), "--size", "100000"],
     r"--size 100000 is above 2048"),
    ("eval-empty-checkpoint", lambda p, w: _eval(p, ck="empty.pt"), r"empty\.pt: an empty file \(0 bytes; .*\); pass a checkpoint"),
    ("eval-bare-generator-state-dict", lambda p, w: _eval(p, ck="bare_generator.pt"),
     r"bare_generator\.pt is a bare generator state dict, without the run record .*; pass a checkpoint written by `mama train`"),
    # -- 4. nonsense accepted silently
    ("eval-sigma-negative", lambda p, w: _eval(p, "--sigma", "-1"), r"--sigma -1\.0 must be a finite number >= 0"),
    ("eval-sigma-nan", lambda p, w: _eval(p, "--sigma", "nan"), r"--sigma nan must be a finite number >= 0"),
    ("eval-nan-calibration-threshold", lambda p, w: _eval(p, "--out", str(w / "e"), ck="nan_threshold.pt"),
     r"nan_threshold\.pt: its calibrated alarm threshold is nan, not a finite number \(no alarm could ever fire\)"),
    ("eval-negative-calibration-sigma", lambda p, w: _eval(p, "--out", str(w / "e"), ck="negative_sigma.pt"),
     r"negative_sigma\.pt: its calibrated smoothing sigma is -5\.0, not a number >= 0"),
    ("eval-zero-calibration-std", lambda p, w: _eval(p, "--out", str(w / "e"), ck="zero_std.pt"),
     r"zero_std\.pt: its calibrated statistics of stream sse are mean .*, std 0\.0"),
    ("eval-calibration-background-of-another-size", lambda p, w: _eval(p, "--out", str(w / "e"), ck="small_background.pt"),
     r"small_background\.pt: its calibrated scene background is \(3, 8, 8\), not a finite \(3, 32, 32\) image"),
    ("train-generator-without-destroyer-stage", lambda p, w: ["train", *TINY, "--data-root", str(p["root"]), "--generator", str(p["gen"]),
                                                              "--out", str(w / "r")],
     r"--generator is the destroyer stage's frozen generator; the generator stage does not use it: add --stage destroyer"),
    ("eval-fit-weights-and-weights", lambda p, w: _eval(p, "--fit-weights", "--weights", "1,1,3,1"),
     r"--fit-weights picks the fusion weights itself, so --weights would be ignored"),
    ("eval-oracle-online", lambda p, w: _eval(p, "--protocol", "online", "--oracle"),
     r"--oracle grid-searches the paper protocol's weights, but --protocol online does not report it"),
    ("train-batch-larger-than-clips", lambda p, w: ["train", *TINY, "--data-root", str(p["root"]), "--batch-size", "100000",
                                                    "--out", str(w / "r")],
     r"--batch-size 100000 is more than the \d+ training clips of .*; use --batch-size \d+ or less"),
    ("eval-last-frame-cut-short", lambda p, w: _eval(p, "--out", str(w / "e"), dataset="ped2", root="cut_test"),
     r"testing/frames/01/11\.jpg: cannot decode this frame \(truncated or not an image\); replace it"),
    ("train-on-a-fifo", lambda p, w: ["train", *TINY, "--dataset", "folder", "--data-root", str(p["pipe.mp4"]), "--out", str(w / "r")],
     r"pipe\.mp4: not a regular file or folder \(a pipe, socket or device\); save the video to a file"),
    ("verify-a-fifo", lambda p, w: ["data", "verify", "--dataset", "folder", "--data-root", str(p["pipe.mp4"])],
     r"pipe\.mp4: not a regular file or folder"),
    ("resume-step-damaged", lambda p, w: _resume(p, w, lambda c: c.__setitem__("step", "four")),
     r"run/latest\.pt: its step \('four'\) or random state is missing or damaged; resume from another checkpoint"),
    ("resume-optimiser-missing", lambda p, w: _resume(p, w, lambda c: c.pop("opt_g")),
     r"run/latest\.pt: cannot restore the generator run from it \(no 'opt_g'\); resume from another checkpoint"),
    ("verify-empty-label-file", lambda p, w: ["data", "verify", "--dataset", "folder", "--data-root", str(p["labelled"])],
     r"labelled/cam1\.npy: cannot read labels \(.*\); write one 0/1 per frame"),
    ("eval-sigma-with-online-only", lambda p, w: _eval(p, "--protocol", "online", "--sigma", "5"),
     r"--sigma smooths the offline protocols \(paper, clean\); the online protocol uses the causal smoothing"),
    ("train-compile-on-cpu", lambda p, w: ["train", *TINY, "--data-root", str(p["root"]), "--compile", "--out", str(w / "r")],
     r"--compile compiles the training step on cuda only .*; drop --compile, or train on CUDA"),
    ("train-amp-on-cpu", lambda p, w: ["train", *TINY, "--data-root", str(p["root"]), "--amp", "--out", str(w / "r")],
     r"--amp \(bf16 autocast\) trains on CUDA only; drop --amp to train on cpu"),
    ("train-nan-before-any-checkpoint", lambda p, w: ["train", *TINY, "--data-root", str(p["root"]), "--lr-g", "1e30", "--iters", "3",
                                                      "--out", str(w / "r")],
     r"became nan at step \d; the run stopped and no checkpoint was saved yet; lower the learning rate"),
    ("score-overlay-under-a-file", lambda p, w: ["score", str(p["videos"] / "cam1.mp4"), "--checkpoint", str(p["des"]), "--out", str(w / "o"),
                                                 "--overlay", str(p["afile"] / "o.mp4")],
     r"--overlay .*afile/o\.mp4: .*afile is a file, so o\.mp4 cannot be written under it"),
    ("score-overlay-not-mp4", lambda p, w: ["score", str(p["videos"] / "cam1.mp4"), "--checkpoint", str(p["des"]), "--out", str(w / "o"),
                                            "--overlay", str(w / "o.txt")],
     r"--overlay .*o\.txt: the file's name must end in \.mp4 .*e\.g\. --overlay o\.mp4"),
    ("score-out-under-a-file", lambda p, w: ["score", str(p["videos"] / "cam1.mp4"), "--checkpoint", str(p["des"]),
                                             "--out", str(p["afile"] / "o")], r"--out .*afile/o: .*afile is a file"),
    ("score-frame-folder-whose-last-file-is-not-an-image", lambda p, w: ["score", str(p["notimage"]), "--checkpoint", str(p["des"]),
                                                                         "--out", str(w / "o")],
     r"notimage/8\.png: cannot decode this frame \(truncated or not an image\)"),
    ("score-frame-of-another-size", lambda p, w: ["score", str(p["odd_test"] / "ped2" / "testing" / "frames" / "01"), "--checkpoint",
                                                  str(p["des"]), "--out", str(w / "o")],
     r"testing/frames/01/8\.jpg: 30x20 pixels, but the video's first frame 0\.jpg is \d+x\d+; replace it"),
    ("score-camera-negative", lambda p, w: ["score", "--camera", "-1", "--checkpoint", str(p["des"]), "--out", str(w / "s")],
     r"--camera -1: a camera index is 0 or more"),
    ("eval-frame-of-another-size", lambda p, w: _eval(p, "--out", str(w / "e"), "--feature-store", "off", dataset="ped2", root="odd_test"),
     r"testing/frames/01/8\.jpg: 30x20 pixels, but the video's first frame 0\.jpg is \d+x\d+; replace it"),
    ("train-frame-of-another-size", lambda p, w: ["train", *TINY, "--dataset", "ped2", "--data-root", str(p["odd_train"]),
                                                  "--feature-store", "off", "--out", str(w / "r")],
     r"training/frames/01/8\.jpg: 30x20 pixels, but the video's first frame 0\.jpg is \d+x\d+; replace it"),
]


def test_cases_are_named_once():
    assert len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("make,pattern", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_error_line_and_leaves_nothing(make, pattern, world, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MAMA_WEIGHTS", str(tmp_path / "weights"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert_one_error_line(make(world, tmp_path), pattern, (tmp_path, world["root"], world["gen"].parent, world["afile"].parent),
                          capsys)


# ---------------------------------------------------------------------------------------
# Shared helpers that `mama score` calls (tested without it)
# ---------------------------------------------------------------------------------------
def test_an_output_file_under_a_file_or_onto_a_folder_is_refused(tmp_path):
    from mama.errors import MamaError
    from mama.io import check_output_file

    (tmp_path / "afile").write_text("x")
    with pytest.raises(MamaError, match=r"^--overlay .*afile/o\.mp4: .*afile is a file, so o\.mp4 cannot be written under it"):
        check_output_file(tmp_path / "afile" / "o.mp4", "--overlay")
    with pytest.raises(MamaError, match=r"^--overlay .* is a folder; give the path of the file"):
        check_output_file(tmp_path, "--overlay")
    with pytest.raises(MamaError, match=r"^--overlay .*o\.txt: the file's name must end in \.mp4 .*e\.g\. --overlay o\.mp4$"):
        check_output_file(tmp_path / "o.txt", "--overlay", (".mp4",))
    assert check_output_file(tmp_path / "new" / "o.mp4", "--overlay", (".mp4",)) == tmp_path / "new" / "o.mp4"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]  # checking creates nothing


def test_a_second_signal_stops_at_once_and_a_third_does_not_cut_what_the_stop_writes():
    from mama.runtime import Interrupted, StopRequest

    with StopRequest() as stop:
        signal.raise_signal(signal.SIGTERM)
        assert stop.requested == "SIGTERM"
        with pytest.raises(Interrupted) as raised:
            signal.raise_signal(signal.SIGINT)
        assert raised.value.exit_code == 143  # the stop's signal, whichever came second
        signal.raise_signal(signal.SIGINT)  # the third, while what was read is written: ignored
    assert stop.exit_code == 143


def test_two_sigterms_end_a_command_with_143_and_one_line(world, tmp_path):
    script = tmp_path / "stop.py"
    script.write_text(
        "import os, signal, sys\n"
        f"sys.path.insert(0, {str(REPO)!r})\n"
        "from mama.train import trainer\n"
        "real = trainer.GeneratorTrainer.train_step\n"
        "def step(self, batch):\n"
        "    out = real(self, batch)\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    return out\n"
        "trainer.GeneratorTrainer.train_step = step\n"
        "from mama.cli.app import main\n"
        f"sys.exit(main(['train', *{TINY!r}, '--data-root', {str(world['root'])!r}, '--out', {str(tmp_path / 'run')!r}, "
        "'--iters', '9']))\n")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 143, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "interrupted" and "Traceback" not in proc.stderr


# ---------------------------------------------------------------------------------------
# The caches heal
# ---------------------------------------------------------------------------------------
def _micro_aucs(report: Path) -> list[float]:
    import json

    return [r["micro_auc"] for r in json.loads(report.read_text())["rows"]]


def test_a_shard_of_another_chunk_is_recomputed_and_every_later_eval_works(world, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MAMA_CACHE", str(tmp_path / "cache"))
    argv = _eval(world, "--protocol", "clean", "--sigma", "0")
    assert main([*argv, "--out", str(tmp_path / "e1")]) == 0
    shards = sorted((tmp_path / "cache" / "features").rglob("chunk*.safetensors"))
    by_video: dict[Path, list[Path]] = {}
    for s in shards:
        by_video.setdefault(s.parent, []).append(s)
    video_shards = next(v for v in by_video.values() if len(v) > 1)
    first, last = video_shards[0], video_shards[-1]
    shutil.copyfile(first, last)  # a valid file with the wrong content: chunk 0 where the last chunk belongs
    want = first.read_bytes()
    assert main([*argv, "--out", str(tmp_path / "e2")]) == 0, capsys.readouterr().err
    assert last.read_bytes() != want  # recomputed and rewritten with its own identity, for every later eval
    assert _micro_aucs(tmp_path / "e1" / "metrics.json") == _micro_aucs(tmp_path / "e2" / "metrics.json")


def _npy_ok(path: Path, frames: int, size: int) -> bool:
    arr = np.load(path, mmap_mode="r")
    return arr.shape == (frames, size, size, 3) and arr.dtype == np.uint8


def test_prepared_frames_cut_short_or_zeroed_are_prepared_again_by_the_next_train(world, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MAMA_CACHE", str(tmp_path / "cache"))
    videos = ["--dataset", "folder", "--data-root", str(world["videos"])]
    assert main(["data", "prepare", *videos, "--size", "32"]) == 0
    prepared = sorted((tmp_path / "cache" / "frames").glob("*.npy"))
    assert len(prepared) == 2 and all(_npy_ok(p, 16, 32) for p in prepared)
    with open(prepared[0], "r+b") as f:
        f.truncate(prepared[0].stat().st_size // 2)
    prepared[1].write_bytes(b"\x00" * prepared[1].stat().st_size)
    rc = main(["train", *TINY, *videos, "--iters", "1", "--feature-store", "off", "--calibrate-videos", "1",
               "--out", str(tmp_path / "run")])
    assert rc == 0, capsys.readouterr().err
    assert all(_npy_ok(p, 16, 32) for p in prepared)


def _assert_one_line(capsys, pattern: str) -> None:
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and re.search(pattern, lines[0]), err
    assert "Traceback" not in out + err


def test_a_cache_that_is_a_file_or_cannot_be_written_is_one_line_naming_mama_cache(world, tmp_path, monkeypatch, capsys):
    from mama import io

    argv = [*_eval(world, "--protocol", "clean"), "--out", str(tmp_path / "e")]
    monkeypatch.setenv("MAMA_CACHE", str(world["afile"]))
    assert main(argv) == 2
    _assert_one_line(capsys, r"^error: MAMA_CACHE=.*afile: cannot write the cache there \(.*afile is a file\); point "
                             r"MAMA_CACHE at a writable folder .* or run with --feature-store off$")
    # A read-only mount, empty or partly filled: the first write (the probe) says EROFS.
    cache = tmp_path / "ro_cache"
    (cache / "features").mkdir(parents=True)
    real = io.tempfile.mkstemp

    def read_only(*args, dir=None, **kwargs):
        if dir is not None and str(dir).startswith(str(cache)):
            raise OSError(errno.EROFS, "Read-only file system")
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(io.tempfile, "mkstemp", read_only)
    monkeypatch.setenv("MAMA_CACHE", str(cache))
    assert main(argv) == 2
    _assert_one_line(capsys, r"^error: MAMA_CACHE=.*ro_cache: cannot write the cache there \(Read-only file system\)")
    assert not (tmp_path / "e").exists()
    assert main([*argv[:-2], "--feature-store", "off", "--out", str(tmp_path / "e")]) == 0  # the fix the line gives
    # Prepared frames need the cache whatever the feature store: the line says so.
    assert main(["data", "prepare", "--dataset", "folder", "--data-root", str(world["videos"]), "--size", "32"]) == 2
    _assert_one_line(capsys, r"^error: MAMA_CACHE=.*ro_cache: cannot write the cache there \(Read-only file system\); "
                             r"point MAMA_CACHE at a writable folder \(.*\) \(video files are decoded once into it\)$")


def test_a_full_disk_while_writing_a_shard_says_so_and_the_next_eval_works(world, tmp_path, monkeypatch, capsys):
    from safetensors import SafetensorError

    from mama.features import store

    monkeypatch.setenv("MAMA_CACHE", str(tmp_path / "cache"))
    real = store.save_file

    def full(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half")
        raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })')

    monkeypatch.setattr(store, "save_file", full)
    argv = [*_eval(world, "--protocol", "clean"), "--out", str(tmp_path / "e")]
    assert main(argv) == 2
    _assert_one_line(capsys, r"^error: no space left on the device of .* while writing chunk000000\.safetensors; "
                             r"no chunk000000\.safetensors was written; free some space")
    assert not list((tmp_path / "cache").rglob("*.tmp*")) and not (tmp_path / "e").exists()
    monkeypatch.setattr(store, "save_file", real)
    assert main(argv) == 0


HOLD_TEMP = r"""
import sys, time
sys.path.insert(0, {repo!r})
from mama.io import atomic_path
with atomic_path({path!r}, suffix=".npy") as tmp:
    tmp.write_bytes(b"half of a prepared video")
    print("writing", flush=True)
    time.sleep(120)
"""


def test_temporaries_of_killed_cache_writers_are_swept_and_live_ones_kept(world, tmp_path, monkeypatch):
    monkeypatch.setenv("MAMA_CACHE", str(tmp_path / "cache"))
    frames = tmp_path / "cache" / "frames"
    frames.mkdir(parents=True)
    script = tmp_path / "hold.py"
    script.write_text(HOLD_TEMP.format(repo=str(REPO), path=str(frames / "cam9-abc-32x32.npy")))
    killed = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    live = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert killed.stdout.readline().strip() == "writing" and live.stdout.readline().strip() == "writing"
        killed.send_signal(signal.SIGKILL)  # kill -9 mid-write: its temporary stays behind
        killed.wait()
        temps = {p.name: p for p in frames.glob(".*.tmp*")}
        assert len(temps) == 2
        dead_temp = next(p for p in temps.values() if f".{killed.pid}-" in p.name)
        live_temp = next(p for p in temps.values() if f".{live.pid}-" in p.name)
        shard_temp = tmp_path / "cache" / "features" / "abc" / "v" / f".chunk000001.safetensors.{killed.pid}-x.tmp.safetensors"
        shard_temp.parent.mkdir(parents=True)
        shard_temp.write_bytes(b"half a shard")
        assert main(["data", "prepare", "--dataset", "folder", "--data-root", str(world["videos"]), "--size", "32"]) == 0
        assert not dead_temp.exists() and live_temp.exists()  # the live writer's is not touched
        assert main([*_eval(world, "--protocol", "clean"), "--out", str(tmp_path / "e")]) == 0
        assert not shard_temp.exists()
    finally:
        live.kill()
        live.wait()


def test_a_weights_dir_that_cannot_be_written_is_one_line_naming_mama_weights(world, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MAMA_WEIGHTS", str(world["afile"] / "weights"))
    before = sorted(p.name for p in world["afile"].parent.iterdir())
    for argv in (["weights", "fetch", "flownet2sd", "--url", "http://127.0.0.1:9/x.pth"],
                 ["weights", "import", str(world["gen"]), "--name", "flownet2sd"]):
        assert main(argv) == 2
        _assert_one_line(capsys, r"^error: MAMA_WEIGHTS=.*afile/weights: cannot write the weights dir there \(.*afile is "
                                 r"a file\); point MAMA_WEIGHTS at a writable folder")
    assert sorted(p.name for p in world["afile"].parent.iterdir()) == before
