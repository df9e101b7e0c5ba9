"""A careless or hostile user at the command line: every bad input and fault below goes through
the real CLI (`mama.cli.app.main`) and must end with exit code 2, one `error:` line that names
the file or flag (and the fix), no traceback, and nothing created or changed on disk.

Faults that need a second process or a failing disk (the run-folder lock, a full disk, a kill
-9 during a save, a stop by SIGTERM) have their own tests at the end.
"""
from __future__ import annotations

import errno
import os
import pickle
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from mama.cli.app import main
from tests.data.fixtures import cell_gt, write_frames, write_mat_dataset

TINY = ["--dataset", "synth", "--preset", "fast", "--size", "32", "--base", "8", "--batch-size", "2",
        "--num-workers", "0", "--device", "cpu", "--val-interval", "100"]


class Evil:
    """Unpickling this runs code: a weights-only loader must refuse it."""

    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.fixture(scope="module")
def world(tiny_run, tmp_path_factory) -> dict[str, Path]:
    """Inputs for the table: good ones (a dataset, trained runs) and broken ones."""
    w = tmp_path_factory.mktemp("world")
    p = {"root": tiny_run["root"], "gen": tiny_run["generator"], "des": tiny_run["destroyer"]}
    (w / "junk.pt").write_bytes(b"\x00not a checkpoint at all" * 20)
    torch.save({"net_g": {"x": torch.zeros(1)}, "cfg": Evil()}, w / "evil.pt")
    with open(w / "pickled.pt", "wb") as f:
        pickle.dump({"a": Evil()}, f)
    (w / "afile").write_text("a file, not a folder")
    rng = np.random.default_rng(0)
    for name, mat in (("emptymat", b""), ("textmat", b"this is not a MAT file " * 10)):
        write_mat_dataset(w / name, "ped2", [7], None, train_frames=(8,))
        (w / name / "ped2" / "ped2.mat").write_bytes(mat)
    write_mat_dataset(w / "badframe", "ped2", [7], cell_gt([[(2, 4)]]), train_frames=(8,))
    frame = w / "badframe" / "ped2" / "testing" / "frames" / "01" / "3.jpg"
    frame.write_bytes(frame.read_bytes()[:60])  # truncated JPEG
    write_mat_dataset(w / "mixed", "ped2", [7], cell_gt([[(2, 4)]]), train_frames=(8,))
    odd = w / "mixed" / "ped2" / "testing" / "frames" / "01" / "4.jpg"
    import cv2

    cv2.imwrite(str(odd), (rng.random((20, 30, 3)) * 255).astype(np.uint8))  # one frame of another size
    write_frames(w / "two" / "cam1", 8, rng)
    write_frames(w / "two" / "cam2", 8, rng)
    (w / "notes.pdf").write_bytes(b"%PDF-1.4")
    # A mama checkpoint without calibration (as a reference-code file would be): strip it.
    payload = torch.load(tiny_run["generator"], weights_only=True)
    payload.pop("calibration")
    torch.save(payload, w / "uncalibrated.pt")
    p.update({k: w / k for k in ("junk.pt", "evil.pt", "pickled.pt", "afile", "emptymat", "textmat", "badframe",
                                 "mixed", "two", "notes.pdf", "uncalibrated.pt")})
    return p


def _copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# (id, argv(world, workspace), the one error line must match this)
CASES = [
    # -- data
    ("verify-missing-root", lambda p, w: ["data", "verify", "--dataset", "ped2", "--data-root", str(w / "nowhere")],
     r"nowhere: data root not found"),
    ("verify-unknown-dataset", lambda p, w: ["data", "verify", "--dataset", "ped9", "--data-root", str(p["root"])],
     r"unknown dataset 'ped9'"),
    ("verify-empty-mat", lambda p, w: ["data", "verify", "--dataset", "ped2", "--data-root", str(p["emptymat"])],
     r"ped2\.mat: cannot read this \.mat file .*save it with MATLAB"),
    ("verify-text-mat", lambda p, w: ["data", "verify", "--dataset", "ped2", "--data-root", str(p["textmat"])],
     r"ped2\.mat: cannot read this \.mat file"),
    ("verify-truncated-frame", lambda p, w: ["data", "verify", "--dataset", "ped2", "--data-root", str(p["badframe"])],
     r"3\.jpg: cannot decode this frame"),
    ("verify-frame-of-another-size", lambda p, w: ["data", "verify", "--dataset", "ped2", "--data-root", str(p["mixed"])],
     r"4\.jpg: 30x20 pixels, but the video's first frame 0\.jpg is \d+x\d+"),
    ("verify-bad-split", lambda p, w: ["data", "verify", "--dataset", "ped2", "--data-root", str(p["root"]), "--split", "all"],
     r"Invalid value for '--split'"),
    ("synth-too-small", lambda p, w: ["data", "synth", "--out", str(w / "s"), "--size", "10"], r"size 10 is out of range"),
    ("synth-too-few-frames", lambda p, w: ["data", "synth", "--out", str(w / "s"), "--frames", "3"], r"3 frames per video is too few"),
    ("synth-over-a-dataset", lambda p, w: ["data", "synth", "--out", str(p["root"])], r"synth: dataset folder already exists"),
    # -- train: settings
    ("train-size-0", lambda p, w: ["train", *TINY, "--data-root", str(p["root"]), "--size", "0"], r"--size 0 must be a positive multiple of 8"),
    ("train-size-100", lambda p, w: ["train", *TINY, "--data-root", str(p["root"]), "--size", "100"], r"--size 100 must be a positive multiple of 8"),
    ("train-base-0", lambda p, w: ["train", *TINY, "--data-root", str(p["root"]), "--base", "0"], r"--base 0 must be a positive whole number"),
    ("train-save-interval-0", lambda p, w: ["train", *TINY, "--data-root", str(p["root"]), "--save-interval", "0"],
     r"--save-interval 0 must be a positive whole number"),
    ("train-val-interval-0", lambda p, w: ["train", *TINY, "--data-root", str(p["root"]), "--val-interval", "0"],
     r"--val-interval 0 must be a positive whole number"),
    ("train-batch-0", lambda p, w: ["train", *TINY, "--data-root", str(p["root"]), "--batch-size", "0"], r"--batch-size 0 must be a positive"),
    ("train-iters-negative", lambda p, w: ["train", *TINY, "--data-root", str(p["root"]), "--iters", "-5"], r"--iters -5 must be a positive"),
    ("train-device-tpu", lambda p, w: ["train", *TINY, "--data-root", str(p["root"]), "--device", "tpu"], r"--device tpu: unknown device"),
    ("train-device-cuda", lambda p, w: ["train", *TINY, "--data-root", str(p["root"]), "--device", "cuda"], r"--device cuda: no CUDA device"),
    ("train-lr-0", lambda p, w: ["train", *TINY, "--data-root", str(p["root"]), "--lr-g", "0"], r"--lr-g 0.0 must be a positive number"),
    ("train-lr-nan", lambda p, w: ["train", *TINY, "--data-root", str(p["root"]), "--lr-a", "nan"], r"--lr-a nan must be a positive number"),
    ("train-workers-negative", lambda p, w: ["train", *TINY, "--data-root", str(p["root"]), "--num-workers", "-1"],
     r"--num-workers -1 must be 0"),
    ("train-out-is-a-file", lambda p, w: ["train", *TINY, "--data-root", str(p["root"]), "--out", str(p["afile"])],
     r"--out .*afile is a file, not a folder"),
    ("train-unknown-preset", lambda p, w: ["train", *TINY, "--data-root", str(p["root"]), "--preset", "slow"], r"unknown --preset 'slow'"),
    ("train-unknown-stage", lambda p, w: ["train", *TINY, "--data-root", str(p["root"]), "--stage", "both"], r"unknown --stage 'both'"),
    ("train-unknown-motion", lambda p, w: ["train", *TINY, "--data-root", str(p["root"]), "--motion", "raft"], r"unknown motion provider 'raft'"),
    ("train-unknown-labels", lambda p, w: ["train", *TINY, "--data-root", str(p["root"]), "--labels", "sam"], r"unknown label provider 'sam'"),
    ("train-weights-for-dis", lambda p, w: ["train", *TINY, "--data-root", str(p["root"]), "--motion-weights", str(p["junk.pt"])],
     r"--motion-weights .*junk\.pt: the motion provider 'dis' uses no weights"),
    ("train-flownet-weights-missing", lambda p, w: ["train", *TINY, "--data-root", str(p["root"]), "--motion", "flownet2sd"],
     r"weights for flownet2sd not found: FlowNet2-SD_checkpoint\.pth\.tar"),
    ("train-missing-data", lambda p, w: ["train", *TINY, "--data-root", str(w / "nodata")], r"nodata: data root not found"),
    ("train-size-abc", lambda p, w: ["train", *TINY, "--data-root", str(p["root"]), "--size", "abc"], r"Invalid value for '--size'"),
    ("train-unknown-option", lambda p, w: ["train", "--bogus", "1"], r"No such option: --bogus"),
    # -- train: the destroyer stage's generator
    ("destroyer-without-generator", lambda p, w: ["train", *TINY, "--data-root", str(p["root"]), "--stage", "destroyer"],
     r"the destroyer stage needs --generator"),
    ("destroyer-generator-missing", lambda p, w: ["train", *TINY, "--data-root", str(p["root"]), "--stage", "destroyer",
                                                  "--generator", str(w / "gone.pt")], r"gone\.pt does not exist"),
    ("destroyer-generator-junk", lambda p, w: ["train", *TINY, "--data-root", str(p["root"]), "--stage", "destroyer",
                                               "--generator", str(p["junk.pt"])], r"junk\.pt: corrupt or not a torch checkpoint"),
    ("destroyer-generator-malicious", lambda p, w: ["train", *TINY, "--data-root", str(p["root"]), "--stage", "destroyer",
                                                    "--generator", str(p["evil.pt"])], r"evil\.pt is not a weights-only checkpoint"),
    ("destroyer-generator-other-size", lambda p, w: ["train", *TINY, "--data-root", str(p["root"]), "--stage", "destroyer",
                                                     "--generator", str(p["gen"]), "--size", "64"],
     r"--size 64 conflicts with the generator .*trained with --size 32"),
    ("destroyer-generator-other-motion", lambda p, w: ["train", *TINY, "--data-root", str(p["root"]), "--stage", "destroyer",
                                                       "--generator", str(p["gen"]), "--motion", "farneback"],
     r"--motion farneback conflicts with the generator"),
    # -- train: resume
    ("resume-nothing-to-resume", lambda p, w: ["train", *TINY, "--data-root", str(p["root"]), "--out", str(w / "fresh"),
                                               "--resume", "latest"], r"--resume latest: .*latest\.pt does not exist"),
    ("resume-other-base", lambda p, w: ["train", *TINY, "--data-root", str(p["root"]), "--out", str(_copy_run(p["gen"].parent, w / "r")),
                                        "--resume", "latest", "--iters", "8", "--base", "16"],
     r"--base 16 differs from the run being resumed .*--base 8"),
    ("resume-other-size", lambda p, w: ["train", *TINY, "--data-root", str(p["root"]), "--out", str(_copy_run(p["gen"].parent, w / "r")),
                                        "--resume", "latest", "--iters", "8", "--size", "64"],
     r"--size 64 differs from the run being resumed"),
    ("resume-fewer-iters", lambda p, w: ["train", *TINY, "--data-root", str(p["root"]), "--out", str(_copy_run(p["gen"].parent, w / "r")),
                                         "--resume", "latest", "--iters", "2"], r"--iters 2 is not above the step 4"),
    ("resume-other-stage", lambda p, w: ["train", *TINY, "--data-root", str(p["root"]), "--out", str(w / "g"), "--resume", str(p["des"])],
     r"cannot resume the generator stage from .*final\.pt: it is a destroyer checkpoint"),
    # -- eval
    ("eval-missing-checkpoint", lambda p, w: ["eval", "--checkpoint", str(w / "nope.pt"), "--dataset", "synth", "--data-root", str(p["root"])],
     r"nope\.pt does not exist"),
    ("eval-junk-checkpoint", lambda p, w: ["eval", "--checkpoint", str(p["junk.pt"]), "--dataset", "synth", "--data-root", str(p["root"])],
     r"junk\.pt: corrupt"),
    ("eval-pickle-checkpoint", lambda p, w: ["eval", "--checkpoint", str(p["pickled.pt"]), "--dataset", "synth", "--data-root", str(p["root"])],
     r"pickled\.pt"),
    ("eval-nan-weights", lambda p, w: ["eval", "--checkpoint", str(p["des"]), "--weights", "nan,1,1,1"], r"--weights nan,1,1,1: the weights must be finite"),
    ("eval-zero-weights", lambda p, w: ["eval", "--checkpoint", str(p["des"]), "--weights", "0,0,0"], r"--weights 0,0,0: .*not all zero"),
    ("eval-two-weights", lambda p, w: ["eval", "--checkpoint", str(p["des"]), "--weights", "1,2"], r"--weights takes 3 or 4"),
    ("eval-unknown-protocol", lambda p, w: ["eval", "--checkpoint", str(p["des"]), "--protocol", "best"], r"unknown --protocol 'best'"),
    ("eval-out-is-a-file", lambda p, w: ["eval", "--checkpoint", str(p["des"]), "--dataset", "synth", "--data-root", str(p["root"]),
                                         "--out", str(p["afile"])], r"--out .*afile is a file"),
    ("eval-empty-mat", lambda p, w: ["eval", "--checkpoint", str(p["des"]), "--dataset", "ped2", "--data-root", str(p["emptymat"]),
                                     "--out", str(w / "e")], r"ped2\.mat: cannot read this \.mat file"),
    ("eval-device-tpu", lambda p, w: ["eval", "--checkpoint", str(p["des"]), "--dataset", "synth", "--data-root", str(p["root"]),
                                      "--device", "tpu", "--out", str(w / "e")], r"--device tpu: unknown device"),
    # -- score
    ("score-missing-input", lambda p, w: ["score", str(w / "nothing"), "--checkpoint", str(p["des"])], r"nothing: not found"),
    ("score-not-a-video", lambda p, w: ["score", str(p["notes.pdf"]), "--checkpoint", str(p["des"]), "--out", str(w / "s")],
     r"notes\.pdf: not a video file"),
    ("score-out-is-a-file", lambda p, w: ["score", str(p["two"]), "--checkpoint", str(p["des"]), "--out", str(p["afile"])],
     r"--out .*afile is a file"),
    ("score-uncalibrated", lambda p, w: ["score", str(p["two"]), "--checkpoint", str(p["uncalibrated.pt"]), "--out", str(w / "s")],
     r"uncalibrated\.pt has no calibration"),
    ("score-overlay-is-a-folder", lambda p, w: ["score", str(p["two"] / "cam1"), "--checkpoint", str(p["des"]), "--out", str(w / "s"),
                                                "--overlay", str(p["two"])], r"--overlay .*two is a folder"),
    ("score-overlay-of-two-videos", lambda p, w: ["score", str(p["two"]), "--checkpoint", str(p["des"]), "--out", str(w / "s"),
                                                  "--overlay", str(w / "o.mp4")], r"--overlay writes one video, but .*two holds 2"),
    ("score-no-camera", lambda p, w: ["score", "--camera", "7", "--checkpoint", str(p["des"]), "--out", str(w / "s")],
     r"--camera 7: no camera with that index can be opened"),
    ("score-input-and-camera", lambda p, w: ["score", str(p["two"]), "--camera", "0", "--checkpoint", str(p["des"])],
     r"give INPUT .* or --camera N, one of the two"),
    ("score-dead-url", lambda p, w: ["score", "http://127.0.0.1:9/cam.mp4", "--checkpoint", str(p["des"]), "--out", str(w / "s")],
     r"http://127\.0\.0\.1:9/cam\.mp4: cannot open this stream"),
    ("score-batch-0", lambda p, w: ["score", str(p["two"]), "--checkpoint", str(p["des"]), "--batch-size", "0"],
     r"--batch-size 0 must be a positive whole number"),
    # -- demo
    ("demo-negative-iters", lambda p, w: ["demo", "--out", str(w / "d"), "--data-root", str(w / "dd"), "--generator-iters", "-1"],
     r"--generator-iters -1 must be a positive whole number"),
    ("demo-out-is-a-file", lambda p, w: ["demo", "--out", str(p["afile"]), "--data-root", str(w / "dd")], r"--out .*afile is a file"),
    # -- weights
    ("weights-import-missing", lambda p, w: ["weights", "import", str(w / "none.pth")], r"none\.pth"),
    ("weights-import-malicious", lambda p, w: ["weights", "import", str(p["evil.pt"]), "--name", "flownet2sd"],
     r"evil\.pt is not a weights-only checkpoint"),
    ("weights-fetch-unknown", lambda p, w: ["weights", "fetch", "raft"], r"unknown weights name 'raft'"),
    ("weights-fetch-file-url", lambda p, w: ["weights", "fetch", "flownet2sd", "--url", "file:///etc/passwd"],
     r"--url file:///etc/passwd: only http:// and https://"),
]


def _tree(*roots: Path) -> dict[str, int]:
    out = {}
    for root in roots:
        for path in root.rglob("*"):
            out[str(path)] = path.stat().st_size if path.is_file() else -1
    return out


def test_at_least_forty_cases():
    assert len(CASES) >= 40 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("make,pattern", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_error_line_and_leaves_nothing(make, pattern, world, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # default output folders land here, where they would be seen
    monkeypatch.setenv("MAMA_WEIGHTS", str(tmp_path / "weights"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert_one_error_line(make(world, tmp_path), pattern, (tmp_path, world["root"], world["gen"].parent), capsys)


def assert_one_error_line(argv: list[str], pattern: str, roots, capsys) -> None:
    """`mama argv` exits 2 with one `error:` line matching `pattern`, no traceback, and nothing
    under `roots` created, changed or left."""
    before = _tree(*roots)
    rc = main(argv)
    out, err = capsys.readouterr()
    assert rc == 2, (rc, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert re.search(pattern, lines[0]), lines[0]
    assert "Traceback" not in out + err and "weights_only=False" not in err and "pwned" not in out
    assert _tree(*roots) == before


# ---------------------------------------------------------------------------------------
# Faults
# ---------------------------------------------------------------------------------------
HOLD_LOCK = r"""
import sys, time
sys.path.insert(0, {repo!r})
from mama.io import output_folder
with output_folder({out!r}):
    print("locked", flush=True)
    time.sleep(60)
"""


def test_a_run_folder_is_locked_while_a_run_writes_it_and_a_killed_lock_is_not_stuck(world, tmp_path, capsys):
    out = tmp_path / "run"
    script = tmp_path / "hold.py"
    script.write_text(HOLD_LOCK.format(repo=str(Path(__file__).resolve().parents[2]), out=str(out)))
    holder = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        rc = main(["train", *TINY, "--data-root", str(world["root"]), "--out", str(out), "--iters", "1"])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and re.fullmatch(rf"error: --out {re.escape(str(out))} is being written by process {holder.pid}; .*", err), err
        assert sorted(p.name for p in out.iterdir()) == [".lock"]  # the second run wrote nothing
    finally:
        holder.kill()  # like kill -9: the lock goes with the process
        holder.wait()
    assert main(["train", *TINY, "--data-root", str(world["root"]), "--out", str(out), "--iters", "1"]) == 0
    assert (out / "final.pt").is_file()


def test_a_full_disk_while_saving_says_so_and_keeps_the_previous_checkpoint(world, tmp_path, monkeypatch, capsys):
    from mama.models import checkpoint

    out = tmp_path / "run"
    real_save = torch.save
    saves = []

    def full_disk_save(obj, f, *args, **kwargs):
        saves.append(f)
        if len(saves) == 3:  # latest.pt of step 1 and 2 went through; the disk is full now
            Path(f).write_bytes(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(checkpoint.torch, "save", full_disk_save)
    rc = main(["train", *TINY, "--data-root", str(world["root"]), "--out", str(out), "--iters", "5", "--save-interval", "1"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error: no space left on the device of ") and "\n" not in err
    assert "while writing latest.pt; the previous latest.pt is intact" in err
    monkeypatch.setattr(checkpoint.torch, "save", real_save)
    assert torch.load(out / "latest.pt", weights_only=True)["step"] == 2  # the last good one
    assert not list(out.glob(".*.tmp*"))


def test_temporaries_a_killed_save_left_are_removed_by_the_next_run(world, tmp_path):
    out = _copy_run(world["gen"].parent, tmp_path / "run")
    stale = [out / ".latest.pt.abc123.tmp", out / ".best.pt.x9.tmp"]
    for s in stale:
        s.write_bytes(b"half a checkpoint")
    assert main(["train", *TINY, "--data-root", str(world["root"]), "--out", str(out), "--resume", "latest", "--iters", "5"]) == 0
    assert not any(s.exists() for s in stale)


def test_a_stopped_run_lists_only_what_it_wrote(world, tmp_path):
    script = tmp_path / "stop.py"
    out = tmp_path / "run"
    script.write_text(
        "import os, signal, sys\n"
        f"sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})\n"
        "from mama.train import trainer\n"
        "real = trainer.GeneratorTrainer.train_step\n"
        "def step(self, batch):\n"
        "    out = real(self, batch)\n"
        "    if self.step == 0: os.kill(os.getpid(), signal.SIGTERM)\n"
        "    return out\n"
        "trainer.GeneratorTrainer.train_step = step\n"
        "from mama.cli.app import main\n"
        f"sys.exit(main(['train', *{TINY!r}, '--data-root', {str(world['root'])!r}, '--out', {str(out)!r}, '--iters', '9']))\n")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    summary = proc.stdout.strip().splitlines()[-1]
    assert "SIGTERM: saved" in proc.stdout and "latest.pt" in summary and "final.pt" not in summary, proc.stdout
    assert not (out / "final.pt").exists()
