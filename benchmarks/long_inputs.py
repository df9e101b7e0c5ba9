"""Length should not matter: peak memory of `mama score` and `mama train` on a short and a long
looped real video, and what the frame store and the feature store cost.

    python benchmarks/long_inputs.py --data-root data --work /tmp/long \
        --json benchmarks/results/long_inputs.json

Inputs are UCSD Ped2 videos looped (test video 01 for scoring, training video 01 for
training), written as mp4 at `--fps` frames per second, so "N minutes" means N * 60 * fps
frames. Every figure is one whole `mama` process; its peak memory is its own VmHWM
(/proc/self/status), written as it exits (`run_measured`). Not ru_maxrss: Linux carries the
high-water mark across fork and exec, so a child's ru_maxrss starts at its parent's resident
size (measured: a child of a 1.5 GB parent reported 1.5 GB, its own VmHWM 13 MB). The
checkpoints are 2-step runs trained here on Ped2 (their weights do not change memory or speed).

Parts (each figure once, on this machine; quote ratios):
  score      peak RSS for a short and a long input at each --size (DIS flow + foreground
             labels, base width 16), and the frames/s and latency the run reported
  train      peak RSS of the generator stage (disk feature store) on a short and a long
             looped training video; start-up (process start to step 1) and steady step time
             of a first run (frames prepared, features computed and written) and a second
             (both read back); frame store and feature store bytes per 1,000 frames
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mama.data.datasets import load_video_frames, make_samples  # noqa: E402

BASE = 16


# `python -c PEAK_WRAPPER ARGS` runs `mama ARGS` and, as it exits, writes its own VmHWM (kB) to
# $MAMA_PEAK_FILE.
PEAK_WRAPPER = """
import atexit, os, runpy, sys
def _peak():
    with open('/proc/self/status') as status, open(os.environ['MAMA_PEAK_FILE'], 'w') as out:
        out.write(next(line for line in status if line.startswith('VmHWM:')).split()[1])
atexit.register(_peak)
runpy.run_module('mama.cli.app', run_name='__main__', alter_sys=True)
"""


def run_measured(args: list[str], env: dict, log: Path) -> dict:
    """Run `mama ARGS` in a process of its own: wall time and its own peak RSS (MiB)."""
    peak_file = log.with_suffix(".peak")
    peak_file.unlink(missing_ok=True)
    start = time.time()
    with open(log, "w") as out:
        proc = subprocess.run([sys.executable, "-c", PEAK_WRAPPER, *args], stdout=out, stderr=subprocess.STDOUT,
                              env={**env, "MAMA_PEAK_FILE": str(peak_file)}, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({proc.returncode}); see {log}")
    return {"wall_s": time.time() - start, "start": start, "peak_rss_mib": int(peak_file.read_text()) / 1024}


def looped_video(path: Path, frames: np.ndarray, count: int, fps: float) -> Path:
    """`frames` (T, 3, H, W) [-1, 1] played again and again up to `count` frames, as an mp4."""
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    images = [np.ascontiguousarray(((f.transpose(1, 2, 0) + 1) * 127.5).clip(0, 255).astype(np.uint8)) for f in frames]
    h, w = images[0].shape[:2]
    tmp = path.with_suffix(".part.mp4")
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    for i in range(count):
        writer.write(images[i % len(images)])
    writer.release()
    tmp.rename(path)
    return path


def checkpoint(work: Path, data_root: Path, size: int, env: dict) -> Path:
    """A Ped2 generator + destroyer at `size` (2 steps each, calibrated on 60 frames)."""
    from mama.config import TrainConfig
    from mama.train.trainer import train

    out = work / f"ckpt{size}"
    if (out / "des" / "final.pt").is_file():
        return out / "des" / "final.pt"
    os.environ["MAMA_CACHE"] = env["MAMA_CACHE"]
    common = dict(dataset="ped2", data_root=str(data_root), preset="paper", motion="dis", labels="foreground",
                  size=size, base=BASE, batch_size=2, iters=2, val_interval=100, save_interval=100,
                  calibrate_videos=1, calibrate_frames=60, device="cpu")
    gen = train(TrainConfig(stage="generator", out=str(out / "gen"), **common))
    train(TrainConfig(stage="destroyer", out=str(out / "des"), generator=str(gen / "final.pt"), **common))
    return out / "des" / "final.pt"


def score_part(a, env: dict) -> list[dict]:
    source = load_video_frames(make_samples("ped2", a.data_root, "testing")[0], (240, 360))
    rows = []
    for size, fps in zip(a.size, a.score_fps):
        ck = checkpoint(a.work, a.data_root, size, env)
        for minutes in a.minutes:
            frames = int(minutes * 60 * fps)
            video = looped_video(a.work / "videos" / f"ped2_test01_{minutes}min_{fps:g}fps.mp4", source, frames, fps)
            out = a.work / f"score{size}_{minutes}min"
            shutil.rmtree(out, ignore_errors=True)
            r = run_measured(["score", str(video), "--checkpoint", str(ck), "--out", str(out), "--device", "cpu"],
                    env, a.work / f"score{size}_{minutes}min.log")
            report = json.loads((out / "scores.json").read_text())
            video_report = report["videos"][0]
            rows.append({"part": "score", "size": size, "minutes": minutes, "fps_of_input": fps, "frames": frames,
                         **{k: v for k, v in r.items() if k != "start"},
                         "frames_per_second": video_report["frames_per_second"],
                         "latency_p50_s": video_report["latency_seconds"].get("p50"),
                         "latency_p95_s": video_report["latency_seconds"].get("p95")})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def _log_times(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["time"] for r in map(json.loads, (run_dir / "log.jsonl").read_text().splitlines()) if "time" in r}


def train_part(a, env: dict) -> list[dict]:
    source = load_video_frames(make_samples("ped2", a.data_root, "training")[0], (240, 360))
    size, fps, rows = a.train_size, a.train_fps, []
    for minutes in a.minutes_train:
        frames = int(minutes * 60 * fps)
        folder = a.work / f"train_{minutes}min"
        looped_video(folder / f"ped2_train01_{minutes}min.mp4", source, frames, fps)
        cache = a.work / f"cache_train_{minutes}min"
        shutil.rmtree(cache, ignore_errors=True)
        for attempt in ("first", "second"):
            out = a.work / f"run_{minutes}min_{attempt}"
            shutil.rmtree(out, ignore_errors=True)
            r = run_measured(["train", "--stage", "generator", "--dataset", "folder", "--data-root", str(folder), "--out", str(out),
                     "--preset", "paper", "--motion", "dis", "--labels", "foreground", "--size", str(size), "--base",
                     str(BASE), "--batch-size", "4", "--iters", str(a.iters), "--val-interval", "100000",
                     "--save-interval", "100000", "--num-workers", "0", "--calibrate-frames", "300", "--device", "cpu"],
                    {**env, "MAMA_CACHE": str(cache)}, a.work / f"train_{minutes}min_{attempt}.log")
            times = _log_times(out)
            steady = (times[a.iters] - times[10]) / (a.iters - 10)
            frame_store = sum(p.stat().st_size for p in (cache / "frames").glob("*.npy"))
            # Training's features (scoring's, which calibration wrote, are in folders of their own).
            feature_store = sum(p.stat().st_size for d in (cache / "features").iterdir()
                                if "use" not in json.loads((d / "identity.json").read_text())
                                for p in d.rglob("*.safetensors"))
            rows.append({"part": "train", "size": size, "minutes": minutes, "fps_of_input": fps, "frames": frames,
                         "run": attempt, "peak_rss_mib": r["peak_rss_mib"], "wall_s": r["wall_s"],
                         "startup_s": times[1] - r["start"], "steady_step_s": steady,
                         "frame_store_bytes_per_1000_frames": frame_store / frames * 1000,
                         "feature_store_bytes_per_1000_frames": feature_store / frames * 1000})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", type=Path, required=True, help="folder holding ped2/")
    p.add_argument("--work", type=Path, required=True, help="scratch folder (videos, runs, caches)")
    p.add_argument("--json", type=Path, help="write the rows here")
    p.add_argument("--parts", nargs="+", default=["score", "train"], choices=["score", "train"])
    p.add_argument("--minutes", type=float, nargs="+", default=[1, 60], help="scoring inputs' lengths")
    p.add_argument("--size", type=int, nargs="+", default=[64, 256], help="scoring frame sizes")
    p.add_argument("--score-fps", type=float, nargs="+", default=[3, 0.5], help="the inputs' frame rate, per --size")
    p.add_argument("--minutes-train", type=float, nargs="+", default=[10, 60])
    p.add_argument("--train-size", type=int, default=64)
    p.add_argument("--train-fps", type=float, default=5)
    p.add_argument("--iters", type=int, default=40, help="training steps per run (logged every 10)")
    a = p.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MAMA_CACHE": str(a.work / "cache")}
    rows = []
    if "score" in a.parts:
        rows += score_part(a, env)
    if "train" in a.parts:
        rows += train_part(a, env)
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps({"rows": rows, "cpu_count": os.cpu_count(),
                                      "date": time.strftime("%Y-%m-%d")}, indent=1))


if __name__ == "__main__":
    main()
