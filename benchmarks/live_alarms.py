"""What a person at a camera gets from `mama score`, measured on the synthetic test set (it has
per-pixel anomaly masks) with a trained run (the demo's by default: `mama demo` first).

    .venv/bin/python benchmarks/live_alarms.py [--run runs/demo] [--data data] [--seconds 60]

Three parts, JSON in benchmarks/results/cpu_live.json:

- maps: the anomaly map the scorer computes for every frame (mama.evaluate.maps, calibrated
  on normal training video), against the masks: pixel AUROC (the combined map, and the
  generator's error and the destroyer's damage alone), the share of anomalous objects (connected
  regions of a frame's mask) hit by a box, the boxes' IoU with the objects they hit, and false
  boxes per normal frame.
- onset: each test video served as a 10 frames/s MJPEG camera on 127.0.0.1 and scored live by
  `mama score URL` in a process of its own; the time from the first abnormal frame leaving
  the server to the `new` line on mama's standard output.
- sustained: the test videos looped as a 25 frames/s camera for --seconds; frames/s scored,
  frames dropped, and the lag (frame available -> scored) over the first and last fifth.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mama.data.datasets import make_samples  # noqa: E402
from mama.evaluate.localisation import load_masks, mask_dir  # noqa: E402
from mama.evaluate.maps import AnomalyMapper, regions  # noqa: E402
from mama.features.clips import INPUT_FRAMES  # noqa: E402
from tests.support import MjpegServer  # noqa: E402

MIN_DURATION = 3  # mama score's default


def _scorer(checkpoint: Path):
    from mama.evaluate.engine import Scorer
    from mama.features.registry import build_extractor
    from mama.models.build import models_from_run
    from mama.models.checkpoint import read_file

    payload = read_file(checkpoint, "run")
    net_g, net_a, meta = models_from_run(payload, checkpoint, need_destroyer=False)
    scorer = Scorer(net_g.eval(), build_extractor(meta["motion"], meta["labels"]), net_a.eval() if net_a is not None else None)
    return scorer, payload["calibration"], int(meta["size"])


def _auroc(maps: list[np.ndarray], masks: list[np.ndarray]) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(np.concatenate([m.ravel() for m in masks]), np.concatenate([m.ravel() for m in maps])))


def _iou(box, bbox) -> float:
    x0, y0, x1, y1 = max(box[0], bbox[0]), max(box[1], bbox[1]), min(box[2], bbox[2]), min(box[3], bbox[3])
    inter = max(0, x1 - x0) * max(0, y1 - y0)
    area = lambda b: (b[2] - b[0]) * (b[3] - b[1])  # noqa: E731
    return inter / (area(box) + area(bbox) - inter)


def maps_part(checkpoint: Path, data: Path) -> dict:
    scorer, calib, size = _scorer(checkpoint)
    c = calib["maps"]
    stats = {k: {s: np.asarray(v) for s, v in d.items()} for k, d in c["stats"].items()}
    mappers = {"combined": AnomalyMapper({"stats": stats, "weights": c["weights"], "threshold": c["threshold"]})}
    for name in c["weights"]:  # each network's map alone, for comparison
        mappers[name] = AnomalyMapper({"stats": stats, "weights": {name: 1.0}, "threshold": c["threshold"]})
    import torch

    from mama.data.datasets import iter_video_frames

    kept = {k: [] for k in mappers}
    masks_small: list[np.ndarray] = []
    objects = hits = normal_frames = false_boxes_normal = boxes_abnormal = false_boxes_abnormal = 0
    ious: list[float] = []
    for v in make_samples("synth", data, "testing"):
        native = np.load(mask_dir(data, "synth") / f"{v.name}.npy")[INPUT_FRAMES:].astype(bool)
        small = load_masks(mask_dir(data, "synth"), v, size)
        frames = (torch.from_numpy(f) for f in iter_video_frames(v, (size, size)))
        for targets, err, dmg in scorer.video_maps(frames, calib.get("background")):
            rows = [t - INPUT_FRAMES for t in targets]
            for name, mapper in mappers.items():
                kept[name].append(mapper(err, dmg))
            masks_small.append(small[rows])
            for amap, mask in zip(kept["combined"][-1], native[rows]):
                boxes = regions(amap, mappers["combined"].threshold, mask.shape)
                if not mask.any():
                    normal_frames += 1
                    false_boxes_normal += len(boxes)
                    continue
                count, labels, st, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
                used = set()
                boxes_abnormal += len(boxes)
                for i in range(1, count):
                    objects += 1
                    x, y, w, h, _ = st[i]
                    bbox = [x, y, x + w, y + h]
                    hit = [j for j, b in enumerate(boxes) if (labels[b[1]:b[3], b[0]:b[2]] == i).any()]
                    if hit:
                        hits += 1
                        used.update(hit)
                        ious.append(max(_iou(boxes[j], bbox) for j in hit))
                false_boxes_abnormal += len(boxes) - len(used)
    return {
        "map_threshold": float(c["threshold"]), "map_weights": c["weights"],
        "pixel_auroc": {k: round(_auroc(v, masks_small), 4) for k, v in kept.items()},
        "objects": objects, "objects_hit_by_a_box": round(hits / max(objects, 1), 4),
        "iou_of_hitting_boxes_median": round(float(np.median(ious)), 4) if ious else None,
        "normal_frames": normal_frames, "false_boxes_per_normal_frame": round(false_boxes_normal / max(normal_frames, 1), 4),
        "boxes_in_abnormal_frames": boxes_abnormal, "boxes_on_no_object_in_abnormal_frames": false_boxes_abnormal,
    }


def _score_live(url: str, checkpoint: Path, out: Path, extra: list[str] = ()):
    """`mama score URL` in a process of its own; returns (process, [(monotonic time, line)], thread)."""
    cmd = [sys.executable, "-m", "mama.cli.app", "score", url, "--checkpoint", str(checkpoint), "--out", str(out),
           "--device", "cpu", "--reconnect", "0", *extra]
    err = open(out.parent / f"{out.name}.stderr", "w+")  # a file: stderr never fills a pipe nobody reads yet
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    proc.err = err
    lines: list[tuple[float, dict]] = []

    def read():
        for line in proc.stdout:
            if line.startswith("{"):
                try:
                    lines.append((time.monotonic(), json.loads(line)))
                except ValueError:  # not one event a line: the run is not measured
                    lines.append((time.monotonic(), {"type": "unreadable", "line": line}))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    return proc, lines, reader


def _wait(proc, reader, what: str, lines: list, timeout: float = 600):
    proc.wait(timeout=timeout)  # stdout is the reader's alone (communicate() would read it too)
    reader.join(timeout=10)
    proc.err.seek(0)
    err = proc.err.read()
    # The served video ends and, with --reconnect 0, the camera is lost: exit 1, everything scored.
    if proc.returncode != 0 and not (proc.returncode == 1 and "did not come back" in err):
        raise SystemExit(f"{what}: mama score exited {proc.returncode}:\n{err[-3000:]}")
    if any(e["type"] == "unreadable" for _, e in lines):
        raise SystemExit(f"{what}: a line on mama's standard output is not one JSON event: "
                         + next(e["line"] for _, e in lines if e["type"] == "unreadable")[:2000])


def onset_part(checkpoint: Path, data: Path, tmp: Path) -> dict:
    videos = []
    for v in make_samples("synth", data, "testing"):
        onset = int(np.flatnonzero(v.labels)[0])
        images = [cv2.imread(str(p)) for p in v.frames]
        server = MjpegServer(images, fps=10).start()
        proc, lines, reader = _score_live(server.url, checkpoint, tmp / f"onset_{v.name}")
        _wait(proc, reader, f"onset {v.name}", lines)
        server.stop()
        news = [(t, e) for t, e in lines if e["type"] == "new"]
        early = [e for _, e in news if e["start_frame"] < onset]
        late = [(t, e) for t, e in news if e["start_frame"] >= onset]
        open_at_onset = any(e["type"] == "end" and e["start_frame"] < onset <= e["end_frame"] for _, e in lines)
        row = {"video": v.name, "onset_frame": onset, "events_started_before_onset": len(early),
               "an_earlier_event_still_open_at_onset": open_at_onset}
        if open_at_onset:  # the camera was already in alarm when the anomaly began: no onset to time
            pass
        elif late and onset in server.served:
            t, e = late[0]
            row.update(new_frame=e["frame"], frames_after_onset=e["frame"] - onset,
                       latency_seconds=round(t - server.served[onset], 3))
        videos.append(row)
    lat = [r["latency_seconds"] for r in videos if "latency_seconds" in r]
    return {"fps": 10, "min_duration": MIN_DURATION, "target_seconds": 1.5 + MIN_DURATION / 10,
            "latency_seconds_median": round(float(np.median(lat)), 3) if lat else None,
            "latency_seconds_max": round(float(np.max(lat)), 3) if lat else None,
            "raised_after_onset": f"{len(lat)}/{len(videos)}",
            "already_in_alarm_at_onset": sum(r["an_earlier_event_still_open_at_onset"] for r in videos), "videos": videos}


def sustained_part(checkpoint: Path, data: Path, tmp: Path, seconds: float) -> dict:
    images = [cv2.imread(str(p)) for v in make_samples("synth", data, "testing") for p in v.frames]
    fps = 25
    server = MjpegServer(images, fps=fps, loops=int(np.ceil(seconds * fps / len(images)))).start()
    out = tmp / "sustained"
    proc, lines, reader = _score_live(server.url, checkpoint, out)
    deadline = time.monotonic() + seconds + 120
    while time.monotonic() < deadline and len(server.served) < seconds * fps:
        time.sleep(0.5)
    server.stop()
    _wait(proc, reader, "sustained", lines)
    v = json.loads((out / "scores.json").read_text())["videos"][0]
    rows = [r.split(",") for r in (out / "scores.csv").read_text().splitlines()]
    lag = np.array([float(r[rows[0].index("lag")]) for r in rows[1:]])
    fifth = max(1, len(lag) // 5)
    return {"source_fps": fps, "seconds": seconds, "frames_read": v["frames"], "frames_scored": v["frames_scored"],
            "dropped": v["dropped"], "scored_fps": v["frames_per_second"], "lag_seconds": v["lag_seconds"],
            "lag_median_first_fifth": round(float(np.median(lag[:fifth])), 3),
            "lag_median_last_fifth": round(float(np.median(lag[-fifth:])), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=REPO / "runs" / "demo")
    parser.add_argument("--data", type=Path, default=REPO / "data")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--parts", default="maps,onset,sustained")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "cpu_live.json")
    a = parser.parse_args()
    checkpoint = a.run / "destroyer" / "final.pt"
    if not checkpoint.is_file():
        raise SystemExit(f"{checkpoint}: not found; run `mama demo` first (or give --run)")
    result = {"command": "benchmarks/live_alarms.py " + " ".join(sys.argv[1:]), "checkpoint": str(checkpoint),
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs", "torch_threads": None}
    import torch

    result["torch_threads"] = torch.get_num_threads()
    if a.out.is_file() and set(a.parts.split(",")) != {"maps", "onset", "sustained"}:  # a part again: keep the others
        result = {**json.loads(a.out.read_text()), **result}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for part in a.parts.split(","):
            t0 = time.monotonic()
            result[part] = {"maps": lambda: maps_part(checkpoint, a.data),
                            "onset": lambda: onset_part(checkpoint, a.data, tmp),
                            "sustained": lambda: sustained_part(checkpoint, a.data, tmp, a.seconds)}[part]()
            print(part, json.dumps(result[part])[:600], f"({time.monotonic() - t0:.0f} s)", flush=True)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=1))
    print(f"written {a.out}")


if __name__ == "__main__":
    main()
