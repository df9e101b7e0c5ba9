"""`mama score` as a stream: the whole-video scorer's numbers frame by frame, events on stdout
as they close, flat memory on a long input, a URL source, and nothing lost on Ctrl-C."""
from __future__ import annotations

import csv
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from mama.cli.app import main
from mama.data.datasets import load_video_frames, make_samples
from mama.evaluate.engine import Scorer
from mama.evaluate.fusion import FusionWeights, StreamStats, fuse_online
from mama.evaluate.alarms import offline_events
from mama.features.registry import build_extractor
from mama.models.build import models_from_run
from mama.models.checkpoint import read_file

REPO = Path(__file__).resolve().parents[2]


def _video_file(path: Path, frames: np.ndarray, loops: int = 1, fps: float = 25.0) -> Path:
    """An mp4 of `frames` (T, 3, H, W) in [-1, 1], played `loops` times."""
    h, w = frames.shape[-2:]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    for _ in range(loops):
        for f in frames:
            writer.write(np.ascontiguousarray(((f.transpose(1, 2, 0) + 1) * 127.5).clip(0, 255).astype(np.uint8)))
    writer.release()
    return path


def _csv_scores(path: Path) -> tuple[list[int], np.ndarray]:
    with open(path) as f:
        rows = list(csv.DictReader(f))
    return [int(r["frame"]) for r in rows], np.array([float(r["score"]) for r in rows])


@pytest.fixture(scope="module")
def whole_video(tiny_run, tmp_path_factory):
    """A test video as a file, and the scores the whole-video scorer gives it (online protocol)."""
    video = make_samples("synth", tiny_run["root"], "testing")[0]
    payload = read_file(tiny_run["destroyer"], "run")
    net_g, net_a, meta = models_from_run(payload, tiny_run["destroyer"], need_destroyer=True)
    frames = load_video_frames(video, (meta["size"], meta["size"]))
    path = _video_file(tmp_path_factory.mktemp("video") / "cam.mp4", frames)
    decoded = load_video_frames(make_samples("folder", path, "testing")[0], (meta["size"], meta["size"]))
    calib = payload["calibration"]
    scorer = Scorer(net_g.eval(), build_extractor(meta["motion"], meta["labels"]), net_a.eval())
    streams = scorer.video_streams(decoded, calib["background"])
    scores = fuse_online(streams, FusionWeights.from_dict(calib["weights"]), StreamStats(calib["stats"]["mean"], calib["stats"]["std"]),
                         calib["sigma"])
    return {"path": path, "scores": scores, "frames": len(decoded)}


def test_a_finite_input_scores_as_the_whole_video_scorer(whole_video, tiny_run, tmp_path, capsys):
    assert main(["score", str(whole_video["path"]), "--checkpoint", str(tiny_run["destroyer"]), "--out", str(tmp_path / "s"),
                 "--device", "cpu"]) == 0
    frames, scores = _csv_scores(tmp_path / "s" / "scores.csv")
    assert frames == list(range(4, whole_video["frames"]))
    np.testing.assert_allclose(scores, whole_video["scores"], rtol=0, atol=1e-6)
    summary = json.loads((tmp_path / "s" / "scores.json").read_text())
    v = summary["videos"][0]
    assert v["frames"] == whole_video["frames"] and v["frames_per_second"] > 0
    assert set(v["lag_seconds"]) == {"p50", "p95"} and not summary["interrupted"]
    # Smaller batches: other chunks, the same scores (within float rounding of other batch sizes).
    assert main(["score", str(whole_video["path"]), "--checkpoint", str(tiny_run["destroyer"]), "--out", str(tmp_path / "b"),
                 "--device", "cpu", "--batch-size", "4"]) == 0
    np.testing.assert_allclose(_csv_scores(tmp_path / "b" / "scores.csv")[1], whole_video["scores"], rtol=0, atol=1e-5)


def test_events_are_json_lines_on_stdout_as_they_happen(whole_video, tiny_run, tmp_path, capsys):
    # A checkpoint whose alarm threshold is the median score: several events in one video.
    payload = torch.load(tiny_run["destroyer"], weights_only=True)
    threshold = float(np.median(whole_video["scores"]))
    payload["calibration"]["threshold"] = threshold
    ckpt = tmp_path / "low.pt"
    torch.save(payload, ckpt)
    capsys.readouterr()
    assert main(["score", str(whole_video["path"]), "--checkpoint", str(ckpt), "--out", str(tmp_path / "e"), "--device", "cpu",
                 "--merge-gap", "2", "--min-duration", "2"]) == 0
    out = capsys.readouterr().out
    printed = [json.loads(line) for line in out.splitlines() if line.strip()]
    expected = [(s + 4, e + 4) for s, e in offline_events(whole_video["scores"], threshold, 2, 2)]
    ends = [p for p in printed if p["type"] == "end"]
    news = [p for p in printed if p["type"] == "new"]
    assert expected and [(p["start_frame"], p["end_frame"]) for p in ends] == expected
    # `new` as soon as the run is min-duration long: at its second frame, before the event's end.
    assert [p["frame"] for p in news] == [s + 1 for s, _ in expected]
    assert [p["id"] for p in news] == [p["id"] for p in ends] and len(set(p["id"] for p in ends)) == len(ends)
    assert all(p["source"] == "cam" and p["threshold"] == round(threshold, 4) for p in printed)
    assert all(Path(p["snapshot"]).is_file() for p in printed)
    written = [json.loads(line) for line in (tmp_path / "e" / "events.jsonl").read_text().splitlines()]
    assert written[0]["type"] == "run" and written[1:] == printed


class _Files(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_a_url_source_scores_as_the_file(whole_video, tiny_run, tmp_path):
    handler = lambda *a, **kw: _Files(*a, directory=str(whole_video["path"].parent), **kw)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/cam.mp4"
        assert main(["score", url, "--checkpoint", str(tiny_run["destroyer"]), "--out", str(tmp_path / "u"), "--device", "cpu"]) == 0
    finally:
        server.shutdown()
        thread.join()
    frames, scores = _csv_scores(tmp_path / "u" / "scores.csv")
    np.testing.assert_allclose(scores, whole_video["scores"], rtol=0, atol=1e-6)
    assert main(["score", "http://127.0.0.1:9/none.mp4", "--checkpoint", str(tiny_run["destroyer"]), "--out", str(tmp_path / "n")]) == 2
    assert not (tmp_path / "n").exists()


def _peak_rss_kb(tmp_path: Path, argv: list[str]) -> int:
    """The peak RSS of `mama ARGV` run in a process of its own (its own VmHWM, as the long-inputs
    benchmark measures it: not ru_maxrss, which a child inherits from this large test process)."""
    from benchmarks.long_inputs import run_measured

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return int(run_measured(argv, env, tmp_path / f"{Path(argv[argv.index('--out') + 1]).name}.log")["peak_rss_mib"] * 1024)


def test_memory_does_not_grow_with_the_length_of_the_input(whole_video, tiny_run, tmp_path):
    frames = load_video_frames(make_samples("folder", whole_video["path"], "testing")[0], (32, 32))
    short = _video_file(tmp_path / "short.mp4", frames, loops=2)
    long = _video_file(tmp_path / "long.mp4", frames, loops=100)  # 50x the frames
    ckpt = str(tiny_run["destroyer"])
    a = _peak_rss_kb(tmp_path, ["score", str(short), "--checkpoint", ckpt, "--out", str(tmp_path / "a"), "--device", "cpu"])
    b = _peak_rss_kb(tmp_path, ["score", str(long), "--checkpoint", ckpt, "--out", str(tmp_path / "b"), "--device", "cpu"])
    # Decoded whole, the long input's frames alone would take whole_kb (float32); the peak may grow
    # by a small fraction of that (allocator noise), not by it.
    whole_kb = 100 * frames[0].size * 4 * len(frames) // 1024
    allowance_kb = 12 * 1024
    assert whole_kb > 3 * allowance_kb
    assert b - a < allowance_kb, (a, b, whole_kb)
    assert len(_csv_scores(tmp_path / "b" / "scores.csv")[0]) == 100 * len(frames) - 4


def test_ctrl_c_keeps_what_was_scored(whole_video, tiny_run, tmp_path):
    frames = load_video_frames(make_samples("folder", whole_video["path"], "testing")[0], (32, 32))
    long = _video_file(tmp_path / "long.mp4", frames, loops=200)
    out = tmp_path / "s"
    proc = subprocess.Popen([sys.executable, "-m", "mama.cli.app", "score", str(long), "--checkpoint", str(tiny_run["destroyer"]),
                             "--out", str(out), "--device", "cpu"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 300
    while time.time() < deadline:
        if (out / "scores.csv").exists() and len((out / "scores.csv").read_text().splitlines()) > 40:
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted" in err and "Traceback" not in err
    frames_scored, scores = _csv_scores(out / "scores.csv")
    summary = json.loads((out / "scores.json").read_text())
    assert summary["interrupted"] and len(summary["videos"][0]["scores"]) == len(scores) >= 40
    assert frames_scored == list(range(4, 4 + len(scores)))  # in order, none lost
    assert (out / "scores_long.png").is_file()
