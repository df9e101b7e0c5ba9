"""`mama serve` with 1, 2 and 4 cameras on this machine: frames/s, lag and dropped frames per
camera, and whether its memory stays flat over a longer run (peak RSS after 1 minute and at the
end). Each camera is a 25 frames/s MJPEG server on 127.0.0.1 looping the synthetic test
videos; the model is the demo's (`mama demo` first).

    .venv/bin/python benchmarks/serve_scale.py [--run runs/demo] [--seconds 45] [--long-minutes 4]

JSON in benchmarks/results/cpu_serve.json.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import cv2

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mama.data.datasets import make_samples  # noqa: E402
from tests.support import MjpegServer, free_port  # noqa: E402



def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _sources(port: int) -> list[dict]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/sources", timeout=10) as r:
        return json.loads(r.read())


def run(n: int, seconds: float, checkpoint: Path, images, tmp: Path, rss_at: tuple = ()) -> dict:
    cams = [MjpegServer(images, fps=25, loops=10 ** 4).start() for _ in range(n)]
    port = free_port()
    cmd = [sys.executable, "-m", "mama.cli.app", "serve", "--checkpoint", str(checkpoint), "--out", str(tmp / f"n{n}"),
           "--port", str(port), "--device", "cpu", *[a for i, c in enumerate(cams) for a in ("--source", f"cam{i}={c.url}")]]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=open(tmp / f"n{n}.err", "w"),
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if all(s["state"] == "running" and s["frames_scored"] > 0 for s in _sources(port)):
                    break
            except OSError:
                pass
            time.sleep(0.5)
        t0, rss = time.monotonic(), {}
        marks = sorted(set(rss_at) | {seconds})
        before = {s["name"]: s["frames_scored"] for s in _sources(port)}
        for mark in marks:
            time.sleep(max(0.0, t0 + mark - time.monotonic()))
            rss[f"{mark:g}s"] = round(_peak_rss_mib(proc.pid), 1)
        after = _sources(port)
        elapsed = time.monotonic() - t0
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as r:
            networks = json.loads(r.read())["networks"]
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)
        for c in cams:
            c.stop()
    return {"cameras": n, "seconds": round(elapsed, 1), "peak_rss_mib": rss,
            "clips_per_network_pass": round(networks[0]["clips"] / max(networks[0]["passes"], 1), 2),
            "per_camera": [{"name": s["name"], "scored_fps": round((s["frames_scored"] - before[s["name"]]) / elapsed, 2),
                            "lag_seconds_p50": s["lag_seconds"], "dropped": s["dropped"], "state": s["state"]}
                           for s in after]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=REPO / "runs" / "demo")
    parser.add_argument("--data", type=Path, default=REPO / "data")
    parser.add_argument("--seconds", type=float, default=45.0)
    parser.add_argument("--long-minutes", type=float, default=4.0)
    parser.add_argument("--parts", default="scale,memory", help="scale (1, 2, 4 cameras), memory (2 cameras, long)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "cpu_serve.json")
    a = parser.parse_args()
    checkpoint = a.run / "destroyer" / "final.pt"
    if not checkpoint.is_file():
        raise SystemExit(f"{checkpoint}: not found; run `mama demo` first (or give --run)")
    images = [cv2.imread(str(p)) for v in make_samples("synth", a.data, "testing") for p in v.frames]
    parts = a.parts.split(",")
    result = json.loads(a.out.read_text()) if a.out.is_file() and parts != ["scale", "memory"] else {}
    result.update({"checkpoint": str(checkpoint), "machine": f"{os.cpu_count()} CPUs", "source_fps": 25})
    with tempfile.TemporaryDirectory() as tmp:
        if "scale" in parts:
            result["command_scale"] = "benchmarks/serve_scale.py " + " ".join(sys.argv[1:])
            result["runs"] = []
            for n in (1, 2, 4):
                result["runs"].append(run(n, a.seconds, checkpoint, images, Path(tmp)))
                print(json.dumps(result["runs"][-1]), flush=True)
        if "memory" in parts:
            result["command_memory"] = "benchmarks/serve_scale.py " + " ".join(sys.argv[1:])
            long = run(2, a.long_minutes * 60, checkpoint, images, Path(tmp), rss_at=(60,))
            result["memory_2_cameras"] = long
            print(json.dumps(long), flush=True)
    a.out.write_text(json.dumps(result, indent=1))
    print(f"written {a.out}")


if __name__ == "__main__":
    main()
