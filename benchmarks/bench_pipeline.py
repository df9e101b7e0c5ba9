"""End-to-end speed: mama's pipeline ("ours") against the reference algorithm ("baseline",
benchmarks/reference_pipeline.py) on the same models, weights and inputs.

Groups (one per figure, ours and the baseline side by side):
  generator-step-<providers>   one generator-stage training step, batch 4
  destroyer-step-<providers>   one destroyer-stage training step, batch 4
  eval-<providers>             scoring one whole test video (extra_info: frames per second)
providers: light (DIS + foreground, weight-free), paper (FlowNet2-SD + DeepLabv3-R101
architectures, random weights). Ours trains with the exact FeatureStore (steady state: the
warm-up round fills it; a training run reads each frame ~100x, docs/design.md).

    pytest benchmarks/bench_pipeline.py --benchmark-only --benchmark-json benchmarks/results/cpu_pipeline.json

Sizes (environment): MAMA_BENCH_SIZE (128), MAMA_BENCH_BASE (64, the paper's width),
MAMA_BENCH_FRAMES (40), MAMA_BENCH_ROUNDS (1), MAMA_BENCH_THREADS (1: on a
shared 2-core machine one intra-op thread is much faster than two, see README.md).
"""
from __future__ import annotations

import os

import pytest
import torch

from benchmarks.workload import PROVIDERS, make_workload

SIZE = int(os.environ.get("MAMA_BENCH_SIZE", 128))
BASE = int(os.environ.get("MAMA_BENCH_BASE", 64))
BATCH = 4
ROUNDS = int(os.environ.get("MAMA_BENCH_ROUNDS", 1))
THREADS = int(os.environ.get("MAMA_BENCH_THREADS", 1))
FRAMES = {"light": 40, "paper": 40}  # a whole (short) test video: Ped2's are 120-180 frames
IMPLS = ("ours", "baseline")


@pytest.fixture(scope="module", autouse=True)
def threads():
    before = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module", params=PROVIDERS)
def workload(request):
    frames = int(os.environ.get("MAMA_BENCH_FRAMES", FRAMES[request.param]))
    return make_workload(request.param, size=SIZE, batch=BATCH, base=BASE, frames=frames)


def _run(benchmark, fn):
    # One warm-up round (fills ours' feature cache, warms allocators), then ROUNDS timed.
    return benchmark.pedantic(fn, rounds=ROUNDS, iterations=1, warmup_rounds=1)


def _describe(benchmark, w, impl):
    benchmark.extra_info.update(impl=impl, providers=w.providers, size=w.size, batch=w.batch, base=w.base,
                                threads=torch.get_num_threads())


@pytest.mark.parametrize("impl", IMPLS)
def test_generator_step(benchmark, workload, impl):
    w = workload
    benchmark.group = f"generator-step-{w.providers}"
    _describe(benchmark, w, impl)
    if impl == "ours":
        trainer = w.generator_trainer(cache=True)
        _run(benchmark, lambda: trainer.train_step(w.batch_items))
    else:
        net_g, net_d = w.generator(), w.discriminator()
        opt_g = torch.optim.AdamW(net_g.parameters(), lr=1e-4, weight_decay=1e-4)
        opt_d = torch.optim.AdamW(net_d.parameters(), lr=1e-5, weight_decay=1e-4)
        ref = w.reference()
        _run(benchmark, lambda: ref.generator_step(net_g, net_d, opt_g, opt_d, w.batch_items))


@pytest.mark.parametrize("impl", IMPLS)
def test_destroyer_step(benchmark, workload, impl):
    w = workload
    benchmark.group = f"destroyer-step-{w.providers}"
    _describe(benchmark, w, impl)
    net_g = w.generator().eval().requires_grad_(False)
    trainer = w.destroyer_trainer(net_g, cache=impl == "ours")
    if impl == "ours":
        _run(benchmark, lambda: trainer.train_step(w.batch_items))
    else:
        ref = w.reference()
        _run(benchmark, lambda: ref.destroyer_step(net_g, trainer.net_a, trainer.opt_a, w.batch_items,
                                                   trainer.damage, trainer.cfg.patch, trainer.cfg.ld))


@pytest.mark.parametrize("impl", IMPLS)
def test_eval_video(benchmark, workload, impl):
    w = workload
    benchmark.group = f"eval-{w.providers}"
    _describe(benchmark, w, impl)
    net_g, net_a = w.generator().eval(), w.destroyer().eval()
    if impl == "ours":
        scorer = w.scorer(net_g, net_a)
        _run(benchmark, lambda: scorer.video_streams(w.video, w.background))
    else:
        ref = w.reference()
        _run(benchmark, lambda: ref.video_streams(net_g, w.video, w.background, net_a))
    scored = w.video.shape[0] - 4
    benchmark.extra_info.update(frames=scored, fps=scored / benchmark.stats.stats.mean)


def test_generator_step_without_cache(benchmark):
    """Ours with the trainer as it is today (extractor per batch): what the cache adds."""
    w = make_workload("light", size=SIZE, batch=BATCH, base=BASE, frames=5)
    benchmark.group = "generator-step-light"
    _describe(benchmark, w, "ours-nocache")
    trainer = w.generator_trainer(cache=False)
    _run(benchmark, lambda: trainer.train_step(w.batch_items))
