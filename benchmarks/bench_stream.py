"""Scoring a camera as it plays: `mama score`'s streaming pipeline (frames decoded one at a
time from a video file, scored in chunks, online fusion per frame) against the whole-video
scorer (decode the whole file, then score it), at the demo's size with the weight-free
providers (DIS flow + foreground labels), base width 16, on the CPU.

extra_info: frames per second and, for the stream, the per-frame latency from a frame's
arrival to its score (p50 / p95). A camera runs at 25 frames/s.

    pytest benchmarks/bench_stream.py --benchmark-only --benchmark-json benchmarks/results/cpu_stream.json
"""
from __future__ import annotations

import os
import time

import cv2
import numpy as np
import pytest
import torch

from mama.data.datasets import iter_video_frames, load_video_frames, make_samples
from mama.evaluate.engine import Scorer
from mama.evaluate.fusion import FusionWeights, OnlineFusion, StreamStats, fuse_online
from mama.features.registry import build_extractor
from mama.models.destroyer import Destroyer
from mama.models.generator import F2LMGenerator

SIZE = int(os.environ.get("MAMA_BENCH_SIZE", 64))
BASE = int(os.environ.get("MAMA_BENCH_BASE", 16))
LOOPS = 3  # Ped2 test video 01 (180 frames) played 3 times: 540 frames, 21.6 s at 25 frames/s
THREADS = int(os.environ.get("MAMA_BENCH_THREADS", 2))


@pytest.fixture(scope="module")
def video_file(ped2_root, tmp_path_factory):
    video = make_samples("ped2", ped2_root, "testing")[0]
    frames = load_video_frames(video, (240, 360))
    path = tmp_path_factory.mktemp("stream") / "ped2_01_looped.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (360, 240))
    for _ in range(LOOPS):
        for f in frames:
            writer.write(np.ascontiguousarray(((f.transpose(1, 2, 0) + 1) * 127.5).clip(0, 255).astype(np.uint8)))
    writer.release()
    return make_samples("folder", path, "testing")[0]


@pytest.fixture(scope="module")
def setup():
    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    scorer = Scorer(F2LMGenerator(label_channels=4, base=BASE).eval(), build_extractor("dis", "foreground"),
                    Destroyer(base=BASE).eval())
    stats = StreamStats({k: 0.0 for k in scorer.stream_names}, {k: 1.0 for k in scorer.stream_names})
    return scorer, stats, FusionWeights(1, 1, 3, 1)


def test_stream(benchmark, setup, video_file):
    scorer, stats, weights = setup
    background = torch.zeros(3, SIZE, SIZE)
    latencies = []

    def run():
        latencies.clear()
        stream, fusion, arrived = scorer.stream(background), OnlineFusion(weights, stats, 3.0), {}
        count = 0

        def emit(targets, inputs):
            streams = scorer.clip_streams(*inputs)
            now = time.perf_counter()
            for j, t in enumerate(targets):
                fusion.push({k: float(streams[k][j]) for k in streams})
                latencies.append(now - arrived.pop(t))

        for frame in iter_video_frames(video_file, (SIZE, SIZE)):
            arrived[count] = time.perf_counter()
            count += 1
            batch = stream.push(torch.from_numpy(frame))
            if batch is not None:
                emit(*batch)
        for batch in stream.finish():
            emit(*batch)
        return count

    frames = benchmark.pedantic(run, rounds=2, iterations=1, warmup_rounds=1)
    p50, p95 = np.percentile(latencies, [50, 95])
    benchmark.group = f"score-stream-{SIZE}"
    benchmark.extra_info.update(impl="stream", frames=frames, fps=frames / benchmark.stats.stats.median,
                                latency_p50_s=float(p50), latency_p95_s=float(p95), size=SIZE, base=BASE,
                                threads=torch.get_num_threads())


def test_whole_video(benchmark, setup, video_file):
    scorer, stats, weights = setup
    background = torch.zeros(3, SIZE, SIZE)

    def run():
        frames = load_video_frames(video_file, (SIZE, SIZE))
        fuse_online(scorer.video_streams(frames, background), weights, stats, 3.0)
        return len(frames)

    frames = benchmark.pedantic(run, rounds=2, iterations=1, warmup_rounds=1)
    benchmark.group = f"score-stream-{SIZE}"
    benchmark.extra_info.update(impl="whole-video", frames=frames, fps=frames / benchmark.stats.stats.median,
                                size=SIZE, base=BASE, threads=torch.get_num_threads())
