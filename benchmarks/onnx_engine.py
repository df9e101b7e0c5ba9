"""ONNX Runtime against PyTorch for scoring on this CPU, in one run, alternating.

    python benchmarks/onnx_engine.py --data-root data --json benchmarks/results/cpu_onnx.json

The model is the demo's architecture (width 16, DIS flow + foreground labels) with random
weights (they do not change the speed), exported by `mama export` at each size. Frames are
UCSD Ped2 test video 01, resized. Figures (medians over --rounds, the engines alternating):

  pipeline   frames/s of Scorer.video_streams: features (DIS, foreground) + networks + streams,
             the generator alone (the camera-box target) and generator + destroyer (the demo)
  features   frames/s of the features alone (the same pipeline with the networks' time taken
             out is not measurable; this is its floor: DIS + foreground per frame)
  networks   frames/s of the generator's forward alone on batches of --batch clips, PyTorch's
             inference copy against ONNX Runtime with 1 and 2 intra-op threads, graph
             optimisation basic / all, and int8 (dynamic quantisation of the weights), with the
             int8 generator's largest stream difference
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mama.data.datasets import load_video_frames, make_samples, video_background  # noqa: E402
from mama.evaluate.engine import Scorer  # noqa: E402
from mama.evaluate.export import export_run, read_export, scorer_from_export  # noqa: E402
from mama.features.registry import build_extractor  # noqa: E402
from mama.features.store import FeatureStore, TensorSource  # noqa: E402
from mama.models.destroyer import Destroyer  # noqa: E402
from mama.models.generator import F2LMGenerator  # noqa: E402
from mama.models.inference import prepare_for_inference  # noqa: E402
from mama.models.onnx import OrtGenerator  # noqa: E402
from mama.models.scores import bottleneck_sims, frame_sse  # noqa: E402

WIDTH = 16
STREAMS = ("sim_motion", "sim_label", "sse", "destroyer_sse")


def random_run(folder: Path, size: int) -> tuple[F2LMGenerator, Destroyer, Path]:
    """A demo-architecture run with random weights at `size`, and its export."""
    torch.manual_seed(0)
    net_g, net_a = F2LMGenerator(flow_channels=6, label_channels=4, base=WIDTH).eval(), Destroyer(base=WIDTH).eval()
    calibration = {"stats": {"mean": dict.fromkeys(STREAMS, 0.0), "std": dict.fromkeys(STREAMS, 1.0)},
                   "weights": {"a": 1.0, "b": 1.0, "c": 3.0, "d": 1.0}, "threshold": 1.0, "sigma": 0.0}
    folder.mkdir(parents=True)
    torch.save({"net_g": net_g.state_dict(), "net_a": net_a.state_dict(), "calibration": calibration,
                "model": {"base": WIDTH, "label_channels": 4, "motion": "dis", "labels": "foreground", "size": size}},
               folder / "final.pt")
    export_run(folder, folder / "export")
    return net_g, net_a, folder / "export"


def median_rate(fn, items: int, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return items / float(np.median(times))


def alternate(fns: dict, items: int, rounds: int) -> dict[str, float]:
    """frames/s of each function, run in turn round after round (one warm-up call each first)."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    return {k: round(items / float(np.median(v)), 2) for k, v in times.items()}


def quantized(export: Path, out: Path) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(export / "generator.onnx"), str(out), weight_type=QuantType.QInt8)
    return out


def measure(size: int, frames: np.ndarray, work: Path, rounds: int, batch: int) -> dict:
    net_g, net_a, export_dir = random_run(work / f"run{size}", size)
    export = read_export(export_dir)
    background = video_background(frames)
    extractor = build_extractor("dis", "foreground")
    targets = len(frames) - 4
    result: dict = {"size": size, "frames": len(frames), "scored": targets}

    # The pipeline as `mama score` runs it, both engines built once (as a scoring run does).
    torch_full = Scorer(net_g, extractor, net_a)
    torch_gen = Scorer(net_g, extractor)
    ort_full = scorer_from_export(export, batch_size=32)
    ort_gen = Scorer(ort_full.generator, ort_full.extractor, batch_size=32, optimize=False)
    pipeline = alternate({
        "torch, generator": lambda: torch_gen.video_streams(frames, background),
        "onnxruntime, generator": lambda: ort_gen.video_streams(frames, background),
        "torch, generator + destroyer": lambda: torch_full.video_streams(frames, background),
        "onnxruntime, generator + destroyer": lambda: ort_full.video_streams(frames, background),
    }, targets, rounds)
    result["pipeline_frames_per_s"] = pipeline
    result["pipeline_ratio_onnxruntime_over_torch"] = {
        what: round(pipeline[f"onnxruntime, {what}"] / pipeline[f"torch, {what}"], 2)
        for what in ("generator", "generator + destroyer")}

    # The features alone: what is left when the networks cost nothing.
    def features():
        store = FeatureStore(extractor, TensorSource({0: torch.from_numpy(frames)}, {0: torch.from_numpy(background)}))
        store.compute_span(0, range(0, len(frames) - 1), range(0, len(frames) - 2))

    result["features_frames_per_s"] = round(median_rate(features, targets, rounds), 2)

    # The generator's forward alone on one batch of clips: engines and ONNX Runtime settings.
    clips = torch.stack([torch.from_numpy(frames[t - 4:t].reshape(-1, size, size)) for t in range(4, 4 + batch)])
    flows = torch.randn(batch, 6, size, size) * 0.01
    labels = torch.rand(batch, 4, size, size)
    prepared = prepare_for_inference(net_g, "cpu")
    gen_file = export.file("generator")
    q_file = quantized(export_dir, work / f"generator{size}_int8.onnx")
    sessions = {
        "onnxruntime all, 2 threads": OrtGenerator(gen_file, threads=2, optimization="all"),
        "onnxruntime all, 1 thread": OrtGenerator(gen_file, threads=1, optimization="all"),
        "onnxruntime basic, 2 threads": OrtGenerator(gen_file, threads=2, optimization="basic"),
        "onnxruntime int8 (dynamic), 2 threads": OrtGenerator(q_file, threads=2, optimization="all"),
    }
    with torch.inference_mode():
        nets = {"torch (inference copy), 2 threads": lambda: prepared(clips, flows, labels)}
        nets.update({k: (lambda s=s: s(clips, flows, labels)) for k, s in sessions.items()})
        result["generator_forward_frames_per_s"] = alternate(nets, batch, rounds)
        want, got = prepared(clips, flows, labels), sessions["onnxruntime int8 (dynamic), 2 threads"](clips, flows, labels)
        diffs = {"sse": frame_sse(got.pred, clips[:, -3:]) - frame_sse(want.pred, clips[:, -3:])}
        for name, a, b in zip(("sim_motion", "sim_label"), bottleneck_sims(got), bottleneck_sims(want)):
            diffs[name] = a - b
        result["int8_stream_max_abs_difference"] = {k: float(v.abs().max()) for k, v in diffs.items()}
        result["int8_stream_scale"] = {"sse": float(frame_sse(want.pred, clips[:, -3:]).abs().max())}
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", type=Path, default=ROOT.parent / "shared" / "datasets")
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--frames", type=int, default=68, help="frames of Ped2 test video 01 scored per run (4 are inputs only)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8, help="clips per generator forward (networks part)")
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "cpu_onnx.json")
    args = ap.parse_args()
    torch.set_num_threads(2)
    import onnxruntime

    video = make_samples("ped2", args.data_root, "testing")[0]
    results = {"command": " ".join(["python", *sys.argv]), "date": time.strftime("%Y-%m-%d"),
               "cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
               "onnxruntime": onnxruntime.__version__, "torch_threads": torch.get_num_threads(), "width": WIDTH,
               "providers": "dis + foreground", "sizes": []}
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            frames = load_video_frames(video, (size, size))[: args.frames]
            results["sizes"].append(measure(size, frames, Path(tmp), args.rounds, args.batch))
            print(json.dumps(results["sizes"][-1], indent=1), flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1))
    print(f"written {args.json}")


if __name__ == "__main__":
    main()
